"""The Ray actor that holds one stage: layers [start, stop) of a model, loaded on its own node from the model's
path or URL (the driver never sends weights), and each session's KV cache for those layers.

A stage also keeps, per session, the hidden states it handed on (its outputs, position by position): they are the
inputs the next stage saw, so a replacement for that stage rebuilds its caches from them at their own positions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

# A batch as the driver describes it: for each sequence in row order, (session id, first position, rows).
Batch = list[tuple[str, int, int]]


class MissingContext(Exception):  # noqa: N818 - a state, not a failure of this code
    """A stage asked to continue a session at a position past what its cache holds (a replacement that was never
    given the session's history): never answered with an empty cache."""


@dataclass
class Record:
    """Hidden states of one session as they were handed to a stage, in the chunks they came in: what a replacement
    for that stage is fed, at the same positions."""

    chunks: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (first position, hidden states)

    def keep(self, pos: int, h: np.ndarray) -> None:
        """Record h at positions pos..: what was recorded from pos on (a step run again after a failover, or a
        session rewound to reuse its prefix) is replaced."""
        while self.chunks and self.chunks[-1][0] >= pos:
            self.chunks.pop()
        self.chunks.append((pos, h.copy()))

    def until(self, length: int) -> list[tuple[int, np.ndarray]]:
        """The chunks for positions below `length`, the last one cut there."""
        return [(pos, h[: length - pos]) for pos, h in self.chunks if pos < length]


@dataclass
class _Session:
    cache: object  # KVCache of the stage's layers
    outputs: Record = field(default_factory=Record)  # what this stage handed on: the next stage's inputs


def _assemble_range(ref: str | None, layers: range, budget: int | None, positions: int, compiled: bool):
    """A Model holding only `layers` (the rest of the file is never read): a URL's by Range requests, each layer's
    bytes checked against the server's catalog digests; a path's (or the default model's) as views of the
    memory-mapped file, of which only these layers' pages are touched. Under a `budget` (the node's own, bytes of
    this process's peak RSS) the layers that do not fit are streamed from the URL or the file as each step needs
    them. Also the MemoryPlan, under a budget."""
    from netboot.assemble import assemble
    from netboot.loader import open_ref, open_remote
    from netboot.placement.base import Residency
    from netboot.planner.plan import StagePlan
    from netboot.sources.urls import is_url

    memory = None
    if ref is not None and is_url(ref):
        source, file, hashes = open_remote(ref, None, {})
        # The table stays in the source, never read: the driver embeds and projects.
        residency = Residency(tuple(layers), table_resident=False, chunk_bytes=1 << 20)
    elif budget is None:
        file = open_ref(ref)
        plan = StagePlan("ray", "cpu", layers, Residency(tuple(layers)), fused_decode=True, streamed=False)
        return assemble(plan, file), None
    else:
        from netboot.sources.file import FileSource

        file = open_ref(ref)
        source, hashes = FileSource(file.path), {}
    if budget is not None:
        memory = _plan_budget(file, layers, budget, positions, compiled)
        residency = memory.residency
    plan = StagePlan("ray", "cpu", layers, residency, fused_decode=False, streamed=True)
    return assemble(plan, file, source, hashes), memory


def _plan_budget(file, layers: range, budget: int, positions: int, compiled: bool):
    from netboot.cluster.nodes import BUDGET_LABEL
    from netboot.errors import NetbootError
    from netboot.planner.budget import plan_memory
    from netboot.planner.resources import Resources

    if file.format != "gguf":
        raise NetbootError(f"{file.path}: a stage under its node's {BUDGET_LABEL} streams GGUF models only (this "
                           f"one is {file.format})")
    r = Resources.measure(budget, compiled)
    return plan_memory(file, budget, positions, 1, r.process_bytes, r.process_peak, r.threads, compiled,
                       r.scratch_per_thread, layers=layers, limit=f"this node's {BUDGET_LABEL}")


class StageWorker:
    """Made a Ray actor by `netboot.cluster.pipeline` (ray.remote(StageWorker)), so this module imports without Ray."""

    def __init__(self, threads: int | None = None):
        """Ready to compute, holding no layers yet: `load` gives it its range. A standby waits like this, its numba
        kernels loaded, so that taking over a lost range costs only reading that range."""
        import os

        # Read when OpenMP starts (numba's first parallel kernel): the stages of a pipeline take turns, and a
        # stage's idle workers spinning would take the cores the others compute on.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from netboot.backends.cpu import kernels
        from netboot.backends.cpu.warm import warm

        self.compiled = warm()
        if threads:
            kernels.set_threads(threads)
        self.model = None
        self.memory = None  # the MemoryPlan under the node's budget
        self.start = self.stop = 0
        self.last = False
        self.sessions: dict[str, _Session] = {}
        self.busy = 0.0  # seconds spent computing, for the benchmark's split of a step's time
        # The direct path (netboot.cluster.direct): steps come in on connections of their own, not as Ray calls.
        self._computing = threading.Lock()  # a step from the path and a Ray call (a replay) never run at once
        self._sending = threading.Lock()
        self._listener = self._secret = None
        self._next = None  # where this stage's outputs go: the next stage, or the driver

    def load(self, ref: str | None, start: int, stop: int, last: bool, budget: int | None = None,
             positions: int = 512) -> dict:
        """Take layers [start, stop) of the model at `ref` (a path on this node, a URL, or None for the default
        model); `last`: nothing after it needs its outputs; `budget`: this node's own limit on the process's peak
        RSS, planned for sessions of up to `positions` tokens."""
        self.model, self.memory = _assemble_range(ref, range(start, stop), budget, positions, self.compiled)
        self.start, self.stop, self.last = start, stop, last
        return self.ready()

    def ready(self) -> dict:
        """Where this stage runs, and what it holds."""
        import os

        import ray

        from netboot import memory
        from netboot.backends.cpu import kernels

        held = self.model is not None
        streamed = list(self.memory.streamed_layers) if self.memory is not None else []
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": kernels.thread_count(),
                "busy": self.busy, "layers": (self.start, self.stop) if held else None, "streamed": streamed,
                "budget": self.memory.budget if self.memory is not None else None, "peak_rss": memory.peak_rss()}

    def listen(self, secret: bytes) -> tuple[str, int]:
        """Take the direct path's connections (authenticated with `secret`) at this node's address; returns it."""
        from multiprocessing.connection import Listener

        import ray

        if self._listener is not None:
            self._listener.close()
        self._secret = secret
        self._listener = Listener((ray.util.get_node_ip_address(), 0), authkey=secret, backlog=8)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True, name="netboot-path").start()
        return self._listener.address

    def link(self, address: tuple[str, int]) -> None:
        """Send this stage's outputs to the stage listening at `address`."""
        from netboot.cluster.direct import INPUT, connect

        self._send_to(connect(address, self._secret, INPUT))

    def _send_to(self, conn) -> None:
        with self._sending:
            old, self._next = self._next, conn
        if old is not None:
            old.close()

    def _accept(self, listener) -> None:
        from multiprocessing import AuthenticationError

        from netboot.cluster.direct import ACK, OUTPUT, no_delay

        while True:
            try:
                conn = no_delay(listener.accept())
                role = conn.recv_bytes()
            except (AuthenticationError, EOFError):
                continue  # a connection without the secret (or one that gave up): never served
            except OSError:
                return  # the listener was closed
            if role == OUTPUT:
                self._send_to(conn)
            else:
                threading.Thread(target=self._serve, args=(conn,), daemon=True, name="netboot-step").start()
            conn.send_bytes(ACK)

    def _serve(self, conn) -> None:
        """Run each step that comes in on `conn` and pass it on (an error, as a message the driver raises)."""
        from netboot.cluster.direct import pack, unpack

        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                conn.close()
                return
            header, h = unpack(message)
            if h is not None:
                batch = [tuple(b) for b in header["batch"]]
                try:
                    message = pack(header["step"], header["batch"], self.run(h, batch))
                except Exception as e:  # noqa: BLE001 - any failure goes to the driver, which raises it
                    message = pack(header["step"], header["batch"], None, f"{type(e).__name__}: {e}")
            with self._sending:
                try:
                    self._next.send_bytes(message)
                except (AttributeError, OSError):
                    pass  # the next hop is gone: the driver's wait finds the stage that is

    def run(self, h: np.ndarray, batch: Batch) -> np.ndarray:
        """Layers [start, stop) on hidden states h (rows in `batch` order), each sequence with its own cache."""
        with self._computing:
            return self._run(h, batch)

    def _run(self, h: np.ndarray, batch: Batch) -> np.ndarray:
        from netboot.model.kv_cache import KVCache
        from netboot.model.layer import Span

        spans, lo = [], 0
        for sid, pos, rows in batch:
            session = self.sessions.get(sid)
            if session is None:
                session = self.sessions[sid] = _Session(KVCache(self.model.config, self.start, self.stop))
            if pos > session.cache.length:
                raise MissingContext(f"layers {self.start}-{self.stop - 1} hold {session.cache.length} positions of "
                                     f"session {sid}, asked to continue at {pos}")
            spans.append(Span(lo, lo + rows, session.cache, pos))
            lo += rows
        began = time.perf_counter()
        with self.model.backend.step(h.shape[0]):
            out = self.model.run_batch(h, self.start, self.stop, spans)
        self.busy += time.perf_counter() - began
        if not self.last:
            for s, (sid, pos, _) in zip(spans, batch, strict=True):
                self.sessions[sid].outputs.keep(pos, out[s.lo : s.hi])
        return out

    def outputs(self, sid: str, until: int) -> list[tuple[int, np.ndarray]]:
        """What this stage handed on for session `sid` at positions below `until`, in order."""
        session = self.sessions.get(sid)
        return [] if session is None else session.outputs.until(until)

    def release(self, sids: list[str]) -> None:
        for sid in sids:
            self.sessions.pop(sid, None)
