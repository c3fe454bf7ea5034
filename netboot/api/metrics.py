"""/metrics in Prometheus' text format: the HTTP requests answered (by endpoint and status) and what the engine
counts: tokens, requests waiting and running, KV cache memory, recent decode speed."""

from __future__ import annotations

from collections import Counter
from typing import Any

PREFIX = "netboot_"


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()

    def count(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def render(self, engine: Any | None) -> str:
        lines: list[str] = []
        _family(lines, "http_requests_total", "counter", "HTTP requests answered, by endpoint and status",
                [({"endpoint": e, "status": str(s)}, n) for (e, s), n in sorted(self.requests.items())])
        _family(lines, "ready", "gauge", "1 when the model is loaded and requests are served",
                [({}, int(engine is not None))])
        if engine is not None:
            _engine(lines, engine)
        return "\n".join(lines) + "\n"


def _engine(lines: list[str], engine: Any) -> None:
    c, s = engine.counters, engine.snapshot()
    counters = [
        ("requests_total", "requests the engine accepted", c.requests),
        ("prompt_tokens_total", "prompt tokens of finished requests", c.prompt_tokens),
        ("cached_tokens_total", "prompt tokens reused from a kept KV cache instead of computed", c.cached_tokens),
        ("generated_tokens_total", "tokens generated", c.generated_tokens),
        ("steps_total", "forward passes over the batch", c.steps),
        ("busy_seconds_total", "seconds spent in forward passes", c.busy_seconds),
    ]
    for name, what, value in counters:
        _family(lines, name, "counter", what, [({}, value)])
    _family(lines, "requests_finished_total", "counter", "requests ended, by reason (stop, length, cancelled, error)",
            [({"reason": r}, n) for r, n in sorted(c.finished.items())])
    gauges = [
        ("requests_waiting", "requests queued for a slot (the queue length)", s["waiting"]),
        ("requests_running", "requests being prefilled or decoded", s["running"]),
        ("parallel", "sequences decoded together at most", s["parallel"]),
        ("context_tokens", "positions each sequence may reach", s["context"]),
        ("kv_cache_bytes_used", "KV cache memory held by running and kept sequences", s["kv_bytes_used"]),
        ("kv_cache_bytes_budget", "KV cache memory the engine may use", s["kv_bytes_budget"]),
        ("tokens_per_second", "tokens generated per second over the last 10 s", s["tokens_per_second"]),
    ]
    for name, what, value in gauges:
        _family(lines, name, "gauge", what, [({}, value)])


def _family(lines: list[str], name: str, kind: str, what: str, samples: list[tuple[dict[str, str], float]]) -> None:
    lines += [f"# HELP {PREFIX}{name} {what}", f"# TYPE {PREFIX}{name} {kind}"]
    for labels, value in samples:
        shown = ",".join(f'{k}="{_escaped(v)}"' for k, v in labels.items())
        lines.append(f"{PREFIX}{name}{'{' + shown + '}' if shown else ''} {_number(value)}")


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
