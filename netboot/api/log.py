"""The access log: one JSON line per request on stderr, as `netboot serve` writes them, with the tokens a
generation used: {"time", "client", "method", "path", "status", "duration", "prompt_tokens",
"completion_tokens"}. Status 499 is a client that went away before its answer was complete."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from aiohttp.abc import AbstractAccessLogger

LOGGED = "netboot.logged"


def write_log(stream: TextIO, request: Any, status: int, duration: float,
              tokens: tuple[int, int] | None = None) -> None:
    now = time.time()
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
              "client": _attr(request, "remote"), "method": _attr(request, "method"),
              "path": _attr(request, "raw_path"), "status": status, "duration": round(duration, 6),
              "prompt_tokens": tokens[0] if tokens else None, "completion_tokens": tokens[1] if tokens else None}
    try:
        stream.write(json.dumps(record) + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def _attr(request: Any, name: str) -> Any:
    try:
        return getattr(request, name)
    except Exception:  # noqa: BLE001 - a half-parsed request may lack any of them
        return None


class AccessLog(AbstractAccessLogger):
    """aiohttp's hook, for the answers it gives itself (a malformed request); the application's own answers are
    logged by its middleware."""

    stream: TextIO = sys.stderr

    def log(self, request: Any, response: Any, time_taken: float) -> None:
        try:
            if request.get(LOGGED):
                return
        except Exception:  # noqa: BLE001
            pass
        write_log(self.stream, request, getattr(response, "status", 0), time_taken)

    @property
    def enabled(self) -> bool:
        return True
