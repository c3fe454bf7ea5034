"""A `Plan`: which layers run where and how their weights are held, made by `plan()`, a pure function of the
model file, the measured `Resources` and the run's `RunLimits` (tested without hardware).

Today a plan has one stage: every layer on this machine's CPU, resident when there is no memory budget, else as
`plan_memory` splits the budget. The cluster and GPU placements add stages and devices to the same record.
"""

from __future__ import annotations

from dataclasses import dataclass

from netboot.formats import ModelFile
from netboot.placement.base import Residency
from netboot.planner.budget import MemoryPlan, plan_memory
from netboot.planner.resources import Resources


@dataclass(frozen=True)
class RunLimits:
    positions: int = 512  # the most tokens a sequence holds (prompt + generated)
    prefetch: int = 1  # streamed layers read ahead


@dataclass(frozen=True)
class StagePlan:
    node: str  # "local", later a cluster node's id
    device: str  # "cpu"
    layers: range
    residency: Residency
    fused_decode: bool  # one-token layers as one compiled call (not worth its code's memory when streaming)
    streamed: bool  # weights read from a source (with the budget's buffers), not views of the mapped file


@dataclass(frozen=True)
class Plan:
    stages: tuple[StagePlan, ...]
    limits: RunLimits
    memory: MemoryPlan | None = None  # the budget's accounting, when there is a budget

    @property
    def stage(self) -> StagePlan:
        """The one stage of a single-machine plan."""
        return self.stages[0]


def plan(file: ModelFile, resources: Resources, limits: RunLimits = RunLimits()) -> Plan:
    n = file.config.n_layers
    if resources.memory_budget is None:
        stage = StagePlan("local", "cpu", range(n), Residency(tuple(range(n))), fused_decode=True, streamed=False)
        return Plan((stage,), limits)
    memory = plan_memory(file, resources.memory_budget, limits.positions, limits.prefetch, resources.process_bytes,
                         resources.process_peak, resources.threads, resources.compiled, resources.scratch_per_thread)
    stage = StagePlan("local", "cpu", range(n), memory.residency, fused_decode=False, streamed=True)
    return Plan((stage,), limits, memory)
