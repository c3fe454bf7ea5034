"""A `Model` whose layers run as stages on Ray actors, one contiguous range each, and which survives a stage's
node dying: the range moves to another node, its KV caches are rebuilt from what the stage before it handed on
(at the positions they had), and the step that failed runs again. Embedding and output run in the driver.

Every session's stage caches are named by the session's `RemoteCache`. Hidden states go from stage to stage over
the direct path (`netboot.cluster.direct`: the stages' own connections, one message per hop), or as Ray object
references chained in one submission; either way the driver waits once per step."""

from __future__ import annotations

import time
import uuid
import weakref
from dataclasses import dataclass, field

import numpy as np

from netboot.cluster.direct import DirectPath, PathBroken
from netboot.cluster.nodes import ClusterError, Node, live_nodes
from netboot.cluster.stage import Batch, Record, StageWorker
from netboot.errors import note
from netboot.model.kv_cache import KVCache
from netboot.model.layer import Span
from netboot.model.transformer import Model

LOAD_TIMEOUT = 300.0  # s for a stage to load its layers
STAGE_TIMEOUT = 3.0  # s for a stage to answer a liveness check: longer, it is hung (or gone) and replaced


class StageHung(Exception):  # noqa: N818 - a state the pipeline recovers from
    """A step is still running and these stages did not answer a liveness check in time."""

    def __init__(self, stages: list[int], timeout: float):
        super().__init__(f"stages {stages} did not answer within {timeout:g} s")
        self.stages = stages


@dataclass(frozen=True)
class Recovery:
    """One lost stage moved: which, where to, and how the time went (seconds)."""

    stage: int
    node: str
    load: float
    replay: float
    positions: int
    sessions: int
    standby: bool  # taken over by the waiting standby actor (kernels loaded), not a new one


@dataclass
class Stage:
    layers: range
    node: Node
    actor: object
    nbytes: int  # its layers' weights
    streamed: tuple[int, ...] = ()  # layers read from the source at each step, under the node's budget
    pid: int = 0  # the actor's process on its node


class RemoteCache:
    """A session's KV cache as the driver knows it: its length, and the hidden states it fed the first stage (the
    first stage's replacement is rebuilt from them). The keys and values themselves live on the stages."""

    def __init__(self, pipeline: Pipeline, capacity: int):
        self.sid = uuid.uuid4().hex
        self.config = pipeline.config
        self.stop = pipeline.config.n_layers
        self.length = 0
        self.capacity = capacity
        self.inputs = Record()  # what the first stage was fed
        self._release = weakref.finalize(self, pipeline.release, self.sid)
        self._release.atexit = False  # at exit the stages go with the driver's job

    @property
    def nbytes(self) -> int:  # what its keys and values take on the stages, all together
        return self.capacity * KVCache.bytes_per_position(self.config)

    def reserve(self, positions: int) -> None:
        self.capacity = max(self.capacity, positions)

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)



@dataclass
class Pipeline(Model):
    """Model's face (embed, run_batch, logits, forward, forward_batch, new_cache) over stages on Ray actors."""

    stages: list[Stage] = field(default_factory=list)
    ref: str | None = None  # what each stage loads: the model's path (on its node) or URL
    threads: int | None = None
    positions: int = 512  # the most tokens a session holds: what a stage under its node's budget plans for
    call_timeout: float = 120.0  # s a step may take though every stage answers: then the run ends
    stage_timeout: float = STAGE_TIMEOUT  # s a running step waits before checking that every stage answers
    transport: str = "direct"  # how hidden states move: "direct" (netboot.cluster.direct) or "ray" (actor calls)
    stepped: float = 0.0  # seconds the driver waited for the stages, all steps (their compute, the hops)
    recoveries: list[Recovery] = field(default_factory=list)
    standby: list[Stage] = field(default_factory=list)  # actors with kernels loaded and no layers, on spare nodes
    _caches: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    _path: DirectPath | None = None

    def new_cache(self, start: int = 0, stop: int | None = None, capacity: int = 256) -> RemoteCache:
        cache = RemoteCache(self, capacity)
        self._caches[cache.sid] = cache
        return cache

    def run_batch(self, h: np.ndarray, start: int, stop: int, spans: list[Span]) -> np.ndarray:
        if (start, stop) != (0, self.config.n_layers):
            raise ValueError("a pipeline runs every layer: its stages hold the ranges")
        batch: Batch = [(s.cache.sid, s.pos, s.hi - s.lo) for s in spans]
        for s in spans:
            s.cache.inputs.keep(s.pos, h[s.lo : s.hi])
        began = time.perf_counter()
        out = self._through_stages(h, batch)
        self.stepped += time.perf_counter() - began
        for s in spans:
            s.cache.length = s.pos + s.hi - s.lo
        return out

    def release(self, sid: str) -> None:
        """Drop a session's caches on every stage (its RemoteCache is gone); best effort, never waited for."""
        import ray

        if not ray.is_initialized():  # a call now would start a Ray of its own
            return
        for stage in self.stages:
            try:
                stage.actor.release.remote([sid])
            except Exception:  # noqa: BLE001 - the actor or Ray itself may be gone (shutdown)
                pass

    def _through_stages(self, h: np.ndarray, batch: Batch) -> np.ndarray:
        import ray

        for _ in range(len(self.stages) + 1):
            try:
                return self._direct(h, batch) if self.transport == "direct" else self._wait(self._chain(h, batch))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, StageHung, PathBroken) as e:
                self._recover(e)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, ray.exceptions.RayActorError):  # a stage whose input came from a dead one
                    self._recover(e)
                    continue
                raise ClusterError(f"a stage failed: {str(e.cause if e.cause else e).splitlines()[0]}") from e
        raise ClusterError("the pipeline kept losing stages; giving up")

    def _chain(self, h: np.ndarray, batch: Batch):
        """The step as Ray calls, each stage's taking the one before's result: a reference to the last's."""
        ref = h
        for stage in self.stages:
            ref = stage.actor.run.remote(ref, batch)
        return ref

    def _direct(self, h: np.ndarray, batch: Batch) -> np.ndarray:
        """The step over the direct path; while it runs, every `stage_timeout` seconds each stage must answer a
        liveness check (as in `_wait`)."""

        if self._path is None:
            try:
                self._path = DirectPath([s.actor for s in self.stages], self.call_timeout)
            except PathBroken as e:  # e.g. a firewall between the nodes that lets only Ray's ports through
                note(f"the stages cannot connect to each other ({e}): hidden states go through Ray's actor calls")
                self.transport = "ray"
                return self._wait(self._chain(h, batch))
        step, began = self._path.send(h, batch), time.monotonic()
        while True:
            out = self._path.receive(step, self.stage_timeout)
            if out is not None:
                return out
            self._check_stages(began)

    def _wait(self, ref) -> np.ndarray:
        """The step's result. While it runs, every `stage_timeout` seconds each stage must answer a liveness check
        within `stage_timeout` (a busy stage answers between its kernels), else StageHung; past `call_timeout`
        with every stage answering, GetTimeoutError."""
        import ray

        began = time.monotonic()
        while True:
            try:
                return ray.get(ref, timeout=self.stage_timeout)
            except ray.exceptions.GetTimeoutError:
                pass
            self._check_stages(began)

    def _check_stages(self, began: float) -> None:
        """A step still running since `began`: StageHung if a stage does not answer, GetTimeoutError past
        `call_timeout` though every stage answers."""
        import ray

        hung = self._silent_stages()
        if hung:
            raise StageHung(hung, self.stage_timeout)
        if time.monotonic() - began > self.call_timeout:
            raise ray.exceptions.GetTimeoutError(f"a step took over {self.call_timeout:.0f} s")

    def _silent_stages(self) -> list[int]:
        """The stages that do not answer a liveness check within `stage_timeout`."""
        return [i for i, s in enumerate(self.stages) if not _answers(s, self.stage_timeout)]

    def _recover(self, error: Exception) -> None:
        """Replace every stage that no longer answers, in order, and rebuild its sessions' caches."""
        import ray

        began = time.perf_counter()
        dead = error.stages if isinstance(error, StageHung) else self._silent_stages()  # StageHung: just checked
        if not dead and isinstance(error, PathBroken):  # every stage answers: connect the path anew
            note(f"the direct path broke ({error}) though every stage answers; connecting it again")
            self._path = None
            return
        if not dead:
            raise ClusterError(f"a step took over {self.call_timeout:.0f} s though every stage answers") from error
        for i in dead:
            old = self.stages[i]
            try:
                ray.kill(old.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass
            lost = (f"stage {i} (layers {old.layers.start}-{old.layers.stop - 1}) on node {old.node.short} "
                    f"({old.node.address}) stopped answering")
            note(f"{lost}; moving it")
            excluded = {self.stages[j].node.id for j in dead}
            t0 = time.perf_counter()
            self.stages[i], standby = self._start_replacement(old, excluded, lost)
            loaded = time.perf_counter() - t0
            sessions, positions = self._replay(i)
            replayed = time.perf_counter() - t0 - loaded
            self._rewire(i)
            self.recoveries.append(Recovery(i, self.stages[i].node.id, loaded, replayed, positions, sessions, standby))
            how = "the standby there" if standby else "a new actor"
            note(f"stage {i} now on node {self.stages[i].node.short} ({self.stages[i].node.address}, {how}): loaded in "
                 f"{loaded:.2f} s, {positions} positions of {sessions} sessions replayed in "
                 f"{replayed:.2f} s; recovered {time.perf_counter() - began:.2f} s after "
                 "the loss was noticed")

    def _rewire(self, i: int) -> None:
        """The direct path through stage i's new actor (built anew at the next step if that fails)."""
        if self._path is None:
            return
        try:
            self._path.replace(i, [s.actor for s in self.stages])
        except PathBroken:
            self._path = None

    def _start_replacement(self, old: Stage, excluded: set[str], lost: str) -> tuple[Stage, bool]:
        """A stage for `old`'s layers: the standby on a live node first, else a new actor on a live node that
        holds no stage, else on any live node; and whether it was the standby."""
        live = {n.id: n for n in live_nodes() if n.id not in excluded}
        what = f"layers {old.layers.start}-{old.layers.stop - 1}"
        while self.standby:
            spare = self.standby.pop(0)
            if spare.node.id not in live:
                continue
            try:
                return load_range(spare, self.ref, old.layers, self.config.n_layers, old.nbytes, self.positions), True
            except ClusterError as e:
                note(f"the standby on node {spare.node.short} could not take {what}: {e}")
        taken = {s.node.id for s in self.stages}
        for node in sorted(live.values(), key=lambda n: (n.id in taken, -n.capacity)):
            try:
                stage = start_stage(self.ref, old.layers, node, self.config.n_layers, self.threads, old.nbytes,
                                    self.positions)
                return stage, False
            except ClusterError as e:
                note(f"node {node.short} could not take {what}: {e}")
        raise ClusterError(f"{lost}, and no live node can take its layers")

    def _replay(self, i: int) -> tuple[int, int]:
        """Feed stage i, new, what its predecessor handed on for every live session (the driver's record of the
        first stage's inputs for stage 0), chunk by chunk at the positions they had."""
        import ray

        stage, sessions, positions = self.stages[i], 0, 0
        for sid, cache in list(self._caches.items()):
            if cache.length == 0:
                continue
            if i == 0:
                chunks = cache.inputs.until(cache.length)
            else:
                chunks = ray.get(self.stages[i - 1].actor.outputs.remote(sid, cache.length), timeout=self.call_timeout)
            for pos, h in chunks:
                ray.get(stage.actor.run.remote(h, [(sid, pos, h.shape[0])]), timeout=self.call_timeout)
                positions += h.shape[0]
            sessions += 1
        return sessions, positions


def _answers(stage: Stage, timeout: float) -> bool:
    import ray

    try:
        ray.get(stage.actor.ready.remote(), timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure to answer is a dead stage here
        return False


_remote_class = None


def start_actor(node: Node, threads: int | None):
    """A StageWorker pinned to `node`, holding no layers; not waited for."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    global _remote_class
    if _remote_class is None:
        _remote_class = ray.remote(StageWorker)
    # No restarts: a restarted actor would come back with empty caches; the pipeline replaces it instead. Two calls
    # at once so that a busy stage still answers the pipeline's liveness check.
    return _remote_class.options(
        num_cpus=0, max_restarts=0, max_concurrency=2,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
    ).remote(threads)


def start_standby(node: Node, threads: int | None) -> Stage:
    """An actor on a spare node that loads its kernels now and a lost range later (`load_range`)."""
    return Stage(range(0), node, start_actor(node, threads), 0)


def start_stage(ref: str | None, layers: range, node: Node, n_layers: int, threads: int | None, nbytes: int,
                positions: int) -> Stage:
    """A stage actor pinned to `node`, holding `layers` loaded from `ref` there; returns once it has loaded."""
    return load_range(start_standby(node, threads), ref, layers, n_layers, nbytes, positions)


def load_range(stage: Stage, ref: str | None, layers: range, n_layers: int, nbytes: int, positions: int) -> Stage:
    """`stage`'s actor loads `layers` (under its node's budget, for sessions of up to `positions` tokens); the
    stage that holds them, once they are loaded."""
    import ray

    last = layers.stop == n_layers
    try:
        ready = ray.get(stage.actor.load.remote(ref, layers.start, layers.stop, last, stage.node.budget, positions),
                        timeout=LOAD_TIMEOUT)
    except ray.exceptions.RayTaskError as e:
        raise ClusterError(str(e.cause if e.cause else e).splitlines()[0]) from e
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
        raise ClusterError(f"the stage did not start: {str(e).splitlines()[0]}") from e
    return Stage(layers, stage.node, stage.actor, nbytes, tuple(ready["streamed"]), ready["pid"])
