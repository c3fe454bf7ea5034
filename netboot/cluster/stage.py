"""The Ray actor that holds one stage: layers [start, stop) of a model, loaded on its own node from the model's
path or URL (the driver never sends weights), and each session's KV cache for those layers.

A stage also keeps, per session, the hidden states it handed on (its outputs, position by position): they are the
inputs the next stage saw, so a replacement for that stage rebuilds its caches from them at their own positions.
"""

from __future__ import annotations

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


def _assemble_range(ref: str | None, layers: range):
    """A Model holding only `layers` in memory: a URL's are read by Range requests, each layer's bytes checked
    against the server's catalog digests (the rest of the file is never fetched); a path's (or the default model's)
    are views of the memory-mapped file, of which only these layers' pages are touched."""
    from netboot.assemble import assemble
    from netboot.loader import open_ref, open_remote
    from netboot.placement.base import Residency
    from netboot.planner.plan import StagePlan
    from netboot.sources.urls import is_url

    if ref is not None and is_url(ref):
        source, file, hashes = open_remote(ref, None, {})
        # The table stays in the source, never read: the driver embeds and projects.
        residency = Residency(tuple(layers), table_resident=False, chunk_bytes=1 << 20)
        return assemble(StagePlan("ray", "cpu", layers, residency, True, True), file, source, hashes)
    file = open_ref(ref)
    plan = StagePlan("ray", "cpu", layers, Residency(tuple(layers)), fused_decode=True, streamed=False)
    return assemble(plan, file)


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

        warm()
        if threads:
            kernels.set_threads(threads)
        self.model = None
        self.start = self.stop = 0
        self.last = False
        self.sessions: dict[str, _Session] = {}
        self.busy = 0.0  # seconds spent computing, for the benchmark's split of a step's time

    def load(self, ref: str | None, start: int, stop: int, last: bool) -> dict:
        """Take layers [start, stop) of the model at `ref` (a path on this node, a URL, or None for the default
        model); `last`: nothing after it needs its outputs."""
        self.model = _assemble_range(ref, range(start, stop))
        self.start, self.stop, self.last = start, stop, last
        return self.ready()

    def ready(self) -> dict:
        """Where this stage runs, and what it holds."""
        import os

        import ray

        from netboot.backends.cpu import kernels

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": kernels.thread_count(),
                "busy": self.busy, "layers": (self.start, self.stop) if self.model is not None else None}

    def run(self, h: np.ndarray, batch: Batch) -> np.ndarray:
        """Layers [start, stop) on hidden states h (rows in `batch` order), each sequence with its own cache."""
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
