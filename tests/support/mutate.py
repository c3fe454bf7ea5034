"""A seeded mutation fuzzer for model files: strategies, a workspace that patches a copy in place, and a runner.

A case is a `Patch`: bytes written at an offset and the file's new size. `Workspace` applies one to a copy of a
file and puts the original bytes back afterwards, so a 250 MB model is copied once per session, not once per case.
The strategies aim at the fields a parser trusts (counts, lengths, types, sizes, floats: `gguf_fields`,
`LLAMA2C_FIELDS`) as well as at random bytes; `json_cases` replaces config.json / header values with hostile ones.
`run_inprocess` and `run_subprocess` run `netboot` on the result; `judge` says whether what came out is acceptable:
exit 0, or exit 1 with one short `netboot: error: ...` line and no traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_ERROR_CHARS = 400
INT_BOUNDARIES = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, -1, -2)
FLOATS = (float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 0.0, -0.0, 1e-45, 1.5, -1.0)
WIDTHS = (1, 2, 4, 8)
HOSTILE_JSON: tuple[Any, ...] = (
    0, -1, 1.5, 2.0, 1e999, -1e999, 2**31 - 1, 2**63, [64], {}, "64", "", None, True, [], "x" * 5000,
)


@dataclass(frozen=True)
class Field:
    """A number in a file that a parser reads: where, how wide, and whether it is a float."""

    offset: int
    width: int
    is_float: bool = False


@dataclass
class Patch:
    """`data` written at `offset`, then the file cut or grown to `size`; `what` describes it for a report."""

    offset: int
    data: bytes
    size: int
    what: str


# -- strategies ---------------------------------------------------------------------------------------------------


def boundary_bytes(value: int, width: int) -> bytes:
    return (value % (1 << (8 * width))).to_bytes(width, "little")


def float_bytes(value: float, width: int) -> bytes:
    """`value` as a little-endian f32 or f64; a finite value too large for f32 becomes inf."""
    if width == 4:
        return np.float32(value).tobytes() if abs(value) <= 3.4e38 or value != value else np.float32(
            np.copysign(np.inf, value)).tobytes()
    return struct.pack("<d", value)


def mutate(original: bytes, size: int, rng: np.random.Generator, fields: list[Field], region: int) -> Patch:
    """One mutation of a file of `size` bytes whose first `region` bytes are `original`: edits stay in that region
    (a header), except truncation. Field-aware strategies are chosen more often when `fields` are known."""
    strategies = ["flip", "int", "float", "insert", "delete", "truncate"]
    weights = [2, 2, 1, 1, 1, 1]
    if fields:
        strategies += ["field_int", "field_float"]
        weights += [6, 2]
    p = np.array(weights, dtype=float) / sum(weights)
    kind = strategies[int(rng.choice(len(strategies), p=p))]
    return _STRATEGIES[kind](original, size, rng, fields, region)


def _flip(original, size, rng, fields, region) -> Patch:
    offset = int(rng.integers(0, region))
    count = int(rng.integers(1, 5))
    data = bytes(original[offset + i] ^ int(rng.integers(1, 256)) for i in range(min(count, region - offset)))
    return Patch(offset, data, size, f"flip {len(data)} bytes at {offset}")


def _int(original, size, rng, fields, region) -> Patch:
    width = int(rng.choice(WIDTHS))
    offset = int(rng.integers(0, max(1, region - width)))
    value = int(rng.choice(len(INT_BOUNDARIES)))
    return Patch(offset, boundary_bytes(INT_BOUNDARIES[value], width), size,
                 f"int{8 * width} {INT_BOUNDARIES[value]:#x} at {offset}")


def _float(original, size, rng, fields, region) -> Patch:
    width = int(rng.choice((4, 8)))
    offset = int(rng.integers(0, max(1, region - width)))
    value = FLOATS[int(rng.integers(len(FLOATS)))]
    return Patch(offset, float_bytes(value, width), size, f"f{8 * width} {value!r} at {offset}")


def _field_int(original, size, rng, fields, region) -> Patch:
    field = fields[int(rng.integers(len(fields)))]
    value = INT_BOUNDARIES[int(rng.integers(len(INT_BOUNDARIES)))]
    if rng.random() < 0.3:  # near the real value: off by a little rather than wildly wrong
        real = int.from_bytes(original[field.offset : field.offset + field.width], "little")
        value = real + int(rng.choice((-2, -1, 1, 2, 7)))
    return Patch(field.offset, boundary_bytes(value, field.width), size,
                 f"field int{8 * field.width} at {field.offset} = {value:#x}")


def _field_float(original, size, rng, fields, region) -> Patch:
    floats = [f for f in fields if f.is_float] or fields
    field = floats[int(rng.integers(len(floats)))]
    width = field.width if field.width in (4, 8) else 4
    value = FLOATS[int(rng.integers(len(FLOATS)))]
    return Patch(field.offset, float_bytes(value, width)[: field.width], size,
                 f"field f{8 * width} at {field.offset} = {value!r}")


def _insert(original, size, rng, fields, region) -> Patch:
    offset = int(rng.integers(0, region))
    extra = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    if region == size:  # a whole file grows
        return Patch(offset, extra + bytes(original[offset:]), size + len(extra), f"insert {len(extra)} at {offset}")
    shifted = (extra + bytes(original[offset:region]))[: region - offset]  # a header shifts within itself
    return Patch(offset, shifted, size, f"insert {len(extra)} bytes at {offset}")


def _delete(original, size, rng, fields, region) -> Patch:
    offset = int(rng.integers(0, region))
    n = int(rng.integers(1, 9))
    rest = bytes(original[offset + n : region])
    if region == size:
        return Patch(offset, rest, max(offset, size - n), f"delete {n} bytes at {offset}")
    return Patch(offset, rest + bytes(region - offset - len(rest)), size, f"delete {n} bytes at {offset}")


def _truncate(original, size, rng, fields, region) -> Patch:
    cut = int(rng.integers(0, region)) if rng.random() < 0.7 else int(rng.integers(0, size))
    return Patch(cut, b"", cut, f"truncate to {cut}")


_STRATEGIES = {
    "flip": _flip, "int": _int, "float": _float, "field_int": _field_int, "field_float": _field_float,
    "insert": _insert, "delete": _delete, "truncate": _truncate,
}


# -- where the numbers are --------------------------------------------------------------------------------------

_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
LLAMA2C_FIELDS = [Field(4 * i, 4) for i in range(7)]


def gguf_fields(buf: bytes, limit: int = 400) -> tuple[list[Field], int]:
    """The counts, lengths, types and scalar values of a well-formed GGUF header (at most `limit`, the large
    arrays' elements left out), and the header's end. Written here, apart from netboot's parser, on purpose."""
    fields = [Field(8, 8), Field(16, 8)]  # tensor count, key count
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)

    def string(pos: int) -> int:
        fields.append(Field(pos, 8))
        return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]

    def value(pos: int, vtype: int) -> int:
        if vtype == 8:
            return string(pos)
        if vtype == 9:
            fields.extend((Field(pos, 4), Field(pos + 4, 8)))
            etype, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if etype in _GGUF_SIZES:
                return pos + count * _GGUF_SIZES[etype]
            for _ in range(count):
                pos = value(pos, etype) if len(fields) < limit else pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
            return pos
        fields.append(Field(pos, _GGUF_SIZES[vtype], vtype in (6, 12)))
        return pos + _GGUF_SIZES[vtype]

    for _ in range(n_kv):
        pos = string(pos)
        fields.append(Field(pos, 4))
        vtype = struct.unpack_from("<I", buf, pos)[0]
        pos = value(pos + 4, vtype)
    for _ in range(n_tensors):
        pos = string(pos)
        fields.append(Field(pos, 4))
        n_dims = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        fields.extend(Field(pos + 8 * i, 8) for i in range(n_dims))
        pos += 8 * n_dims
        fields.extend((Field(pos, 4), Field(pos + 4, 8)))
        pos += 12
    return fields, pos


# -- JSON mutations -----------------------------------------------------------------------------------------------


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) to a value inside a JSON document, containers included."""
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            paths += json_paths(v, prefix + (k,))
    elif isinstance(value, list) and len(value) <= 8:
        for i, v in enumerate(value):
            paths += json_paths(v, prefix + (i,))
    return paths


def replace_json(doc: Any, path: tuple, new: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = new
    return doc


def hostile_json(doc: Any, rng: np.random.Generator) -> tuple[Any, str]:
    """`doc` with one value (chosen at random) replaced by a hostile one, or a key removed."""
    paths = json_paths(doc)
    path = paths[int(rng.integers(len(paths)))]
    if rng.random() < 0.15 and isinstance(path[-1], str):
        doc = json.loads(json.dumps(doc))
        target = doc
        for k in path[:-1]:
            target = target[k]
        del target[path[-1]]
        return doc, f"delete {'.'.join(map(str, path))}"
    new = HOSTILE_JSON[int(rng.integers(len(HOSTILE_JSON)))]
    return replace_json(doc, path, new), f"{'.'.join(map(str, path))} = {json.dumps(new)[:40]}"


# -- the file a case runs on ------------------------------------------------------------------------------------


class Workspace:
    """A copy of `original` at `work`, patched in place for one case and restored after it."""

    def __init__(self, original: Path, work: Path):
        self.original = Path(original)
        self.work = Path(work)
        self.size = self.original.stat().st_size
        self._copy(0, self.size)

    def _copy(self, start: int, stop: int) -> None:
        with open(self.original, "rb") as src, open(self.work, "r+b" if self.work.exists() else "wb") as dst:
            while start < stop:
                n = os.copy_file_range(src.fileno(), dst.fileno(), stop - start, start, start)
                if n == 0:
                    break
                start += n

    @contextlib.contextmanager
    def applied(self, patch: Patch):
        with open(self.work, "r+b") as f:
            f.seek(patch.offset)
            f.write(patch.data)
            f.truncate(patch.size)
        try:
            yield self.work
        finally:
            with open(self.work, "r+b") as f:
                f.truncate(self.size)
            lo = min(patch.offset, patch.size)
            hi = self.size if patch.size != self.size else min(self.size, patch.offset + len(patch.data))
            self._copy(lo, max(lo, hi))


# -- running a case -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    rc: int | None  # None: killed by the timeout
    stderr: str
    seconds: float


class _Timeout(BaseException):
    pass


def run_inprocess(argv: list[str], timeout: float = 20.0) -> Outcome:
    """`netboot.cli.main(argv)` in this process, output captured; an escaping exception is rc 99 with its
    traceback. The timeout is SIGALRM: it stops Python code, not a long C call (use `run_subprocess` for those)."""
    from netboot.cli import main

    err, out = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.monotonic()
    rc: int | None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except _Timeout:
        rc = None
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - a traceback is what the fuzzer looks for
        rc = 99
        err.write(traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(rc, err.getvalue(), time.monotonic() - start)


def run_subprocess(argv: list[str], timeout: float = 60.0, memory: int = 3 << 30) -> Outcome:
    """`python -m netboot ARGV` in a child with an address-space limit (a normal `run` of the default model needs
    under 2 GB of it); rc is negative for a signal, None for the timeout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "netboot", *argv], capture_output=True, timeout=timeout, preexec_fn=limit,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode("utf-8", "replace") if exc.stderr else ""
        return Outcome(None, stderr[-2000:], time.monotonic() - start)
    return Outcome(proc.returncode, proc.stderr.decode("utf-8", "replace")[-100_000:], time.monotonic() - start)


def judge(outcome: Outcome) -> str:
    """"ok", "error" (a clean one-line refusal), or "bad: <why>"."""
    if outcome.rc is None:
        return "bad: timeout"
    if outcome.rc < 0:
        return f"bad: signal {-outcome.rc}"
    if "Traceback" in outcome.stderr:
        return "bad: traceback"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if outcome.rc == 0:
        return "ok"
    if outcome.rc != 1:
        return f"bad: exit {outcome.rc}"
    errors = [line for line in lines if line.startswith("netboot: error: ")]
    if len(errors) != 1 or len(errors[0]) > MAX_ERROR_CHARS or errors[0] == "netboot: error: ":
        return f"bad: message ({len(errors)} error lines, {sum(len(e) for e in errors)} chars)"
    return "error"


# -- the corpus and a campaign ----------------------------------------------------------------------------------


@dataclass
class Target:
    """A file to mutate (`work`), what netboot is pointed at (`model`), and how to mutate it: as bytes within
    `region` (knowing `fields`), or, when `doc` is set, as a JSON document (config.json, a SafeTensors header)."""

    label: str
    work: Workspace
    model: Path
    region: int
    fields: list[Field]
    doc: Any = None
    header_json: bool = False  # doc is a SafeTensors header: the file is 8-byte length + JSON + the rest
    extra: tuple[str, ...] = ()  # more arguments for netboot (a --tokenizer)

    def patch(self, rng: np.random.Generator) -> Patch:
        if self.doc is None:
            with open(self.work.original, "rb") as f:
                head = f.read(self.region)
            return mutate(head, self.work.size, rng, self.fields, self.region)
        doc, what = hostile_json(self.doc, rng)
        text = json.dumps(doc).encode()
        if not self.header_json:
            return Patch(0, text, len(text), what)
        rest = self.work.original.read_bytes()[self.region :]
        pad = b" " * (-len(text) % 8)
        data = struct.pack("<Q", len(text) + len(pad)) + text + pad + rest
        return Patch(0, data, len(data), what)


def small_corpus(folder: Path, seed: int = 0) -> list[Target]:
    """Small models of each format written by the tests' synthetic writers, and their targets."""
    from support.synthetic import (
        SMALL,
        byte_vocab,
        random_weights,
        write_gguf,
        write_llama2c,
        write_llama2c_tokenizer,
        write_safetensors,
    )

    rng = np.random.default_rng(seed)
    weights = random_weights(SMALL, rng)
    vocab = [p.decode() for p in byte_vocab(SMALL.vocab)]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": vocab,
            "tokenizer.ggml.scores": [float(-i) for i in range(len(vocab))],
            "tokenizer.ggml.token_type": [1] * len(vocab), "tokenizer.ggml.bos_token_id": 1}
    pristine, work = folder / "pristine", folder / "work"
    targets = []
    for sub in ("gguf", "llama2c", "safetensors"):
        (pristine / sub).mkdir(parents=True, exist_ok=True)
        (work / sub).mkdir(parents=True, exist_ok=True)
    gguf_path = pristine / "gguf" / "model.gguf"
    write_gguf(gguf_path, SMALL, weights, metadata=meta)
    fields, end = gguf_fields(gguf_path.read_bytes())
    ws = Workspace(gguf_path, work / "gguf" / "model.gguf")
    targets.append(Target("gguf-small", ws, ws.work, end, fields))

    l2c = write_llama2c(pristine / "llama2c" / "model.bin", SMALL, weights)
    tok = write_llama2c_tokenizer(pristine / "llama2c" / "tokenizer.bin", byte_vocab(SMALL.vocab))
    model_ws = Workspace(l2c, work / "llama2c" / "model.bin")
    tok_ws = Workspace(tok, work / "llama2c" / "tokenizer.bin")
    targets.append(Target("llama2c", model_ws, model_ws.work, 28, LLAMA2C_FIELDS))
    targets.append(Target("tokenizer.bin", tok_ws, model_ws.work, tok_ws.size, [Field(0, 4)]))

    st_dir = pristine / "safetensors"
    write_safetensors(st_dir, SMALL, weights)
    st_file = st_dir / "model.safetensors"
    blob = st_file.read_bytes()
    (n,) = struct.unpack_from("<Q", blob)
    st_ws = Workspace(st_file, work / "safetensors" / "model.safetensors")
    cfg_ws = Workspace(st_dir / "config.json", work / "safetensors" / "config.json")
    header = json.loads(blob[8 : 8 + n])
    config = json.loads((st_dir / "config.json").read_text())
    extra = ("--tokenizer", str(tok))  # a llama2.c tokenizer.bin serves: the run needs one, which one is no matter
    targets.append(Target("safetensors", st_ws, work / "safetensors", 8 + n, [Field(0, 8)], extra=extra))
    targets.append(Target("safetensors-header", st_ws, work / "safetensors", 8 + n, [], header, True, extra))
    targets.append(Target("config.json", cfg_ws, work / "safetensors", cfg_ws.size, [], config, extra=extra))
    return targets


def default_target(folder: Path, model: Path) -> Target:
    """The default model, copied once into `folder`; mutations stay within its header."""
    with open(model, "rb") as f:
        head = f.read(16 << 20)
    fields, end = gguf_fields(head)
    ws = Workspace(model, folder / "default.gguf")
    return Target("gguf-default", ws, ws.work, end, fields)


@dataclass
class Result:
    label: str
    command: str
    what: str
    verdict: str
    outcome: Outcome


def run_case(target: Target, patch: Patch, command: str, subprocess_: bool) -> Result:
    argv = [command, str(target.model), *target.extra]
    if command == "run":
        argv += ["-p", "hi", "-n", "2", "--temperature", "0", "--threads", "1"]
    with target.work.applied(patch):
        outcome = run_subprocess(argv) if subprocess_ else run_inprocess(argv)
    return Result(target.label, command, patch.what, judge(outcome), outcome)


def save_case(folder: Path, index: int, target: Target, patch: Patch, result: Result) -> Path:
    """A bad case as files to reproduce it: the mutated file, and what ran and what came out."""
    case = folder / f"case-{index:05d}-{target.label}"
    case.mkdir(parents=True, exist_ok=True)
    with target.work.applied(patch):
        data = target.work.work.read_bytes() if target.work.size < (64 << 20) else None
    if data is not None:
        (case / target.work.work.name).write_bytes(data)
    (case / "case.json").write_text(json.dumps({
        "target": target.label, "original": str(target.work.original), "mutation": patch.what,
        "offset": patch.offset, "size": patch.size, "data_hex": patch.data[:4096].hex() if data is None else None,
        "command": result.command, "verdict": result.verdict, "rc": result.outcome.rc,
        "stderr": result.outcome.stderr[-4000:],
    }, indent=2))
    return case


def campaign(
    targets: list[Target], seed: int, cases: int | None = None, seconds: float | None = None,
    every_subprocess: int = 10, every_run: int = 0, bad_folder: Path | None = None,
) -> tuple[dict[tuple[str, str], int], list[Result]]:
    """Cases round-robin over `targets` until `cases` are done or `seconds` have passed: `info` in this process,
    every `every_subprocess`-th in a child (timeout, memory limit), every `every_run`-th as a `run` in a child.
    Returns counts per (label, verdict) and the bad results (saved under `bad_folder` when given)."""
    rng = np.random.default_rng(seed)
    counts: dict[tuple[str, str], int] = {}
    bad: list[Result] = []
    stop = time.monotonic() + seconds if seconds is not None else None
    i = 0
    while (cases is None or i < cases) and (stop is None or time.monotonic() < stop):
        target = targets[i % len(targets)]
        patch = target.patch(rng)
        run = bool(every_run) and i % every_run == every_run - 1
        child = run or (bool(every_subprocess) and i % every_subprocess == 0)
        result = run_case(target, patch, "run" if run else "info", child)
        key = (f"{target.label} {result.command}{'' if child else ' (in-process)'}", result.verdict.split(":")[0])
        counts[key] = counts.get(key, 0) + 1
        if result.verdict.startswith("bad"):
            bad.append(result)
            if bad_folder is not None:
                save_case(bad_folder, i, target, patch, result)
        i += 1
    return counts, bad


def table(counts: dict[tuple[str, str], int]) -> str:
    """Counts per target and command (rows) and verdict (columns)."""
    verdicts = ["ok", "error", "bad"]
    rows = sorted({label for label, _ in counts})
    width = max(len(r) for r in rows) if rows else 10
    lines = [f"{'target / command':<{width}}  " + "  ".join(f"{v:>6}" for v in verdicts)]
    for r in rows:
        lines.append(f"{r:<{width}}  " + "  ".join(f"{counts.get((r, v), 0):>6}" for v in verdicts))
    return "\n".join(lines)
