"""The planner as a pure function: a model file, written-down resources and limits in, a `Plan` out, with no
machine measured. Today's decisions: everything resident without a budget; under one, the first layers that fit
stay, the rest stream, the table stays only when all of that leaves room for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netboot.config import ModelConfig
from netboot.errors import MemoryBudgetError
from netboot.formats import ModelFile
from netboot.formats.names import expected_shapes, layer_spans
from netboot.placement.base import Residency
from netboot.planner.budget import plan_memory
from netboot.planner.explain import explain
from netboot.planner.plan import RunLimits, plan
from netboot.planner.resources import Resources
from netboot.tensors.ggml import GGMLType, row_bytes
from netboot.tensors.qtensor import QTensor

MB = 10**6
CONFIG = ModelConfig("llama", n_layers=6, dim=256, n_heads=4, n_kv_heads=2, head_dim=64, ffn_dim=512, vocab_size=4096)


def model_file() -> ModelFile:
    """A model index laid out as a GGUF would be (table, then layer after layer), over bytes nothing reads."""
    tensors, offset = {}, 0
    for name, shape in expected_shapes(CONFIG).items():
        nbytes = row_bytes(GGMLType.Q8_0, shape[-1]) * (shape[0] if len(shape) > 1 else 1)
        qtype = GGMLType.Q8_0 if len(shape) > 1 else GGMLType.F32
        nbytes = nbytes if len(shape) > 1 else 4 * shape[0]
        tensors[name] = QTensor.from_bytes(name, qtype, shape, np.zeros(nbytes, np.uint8), offset)
        offset += nbytes
    return ModelFile(Path("model.gguf"), "gguf", CONFIG, tensors, None)


FILE = model_file()
LIMITS = RunLimits(positions=64, prefetch=1)
LAYER = layer_spans(FILE)[0].nbytes


def resources(budget: int | None, process: int = 100 * MB) -> Resources:
    return Resources(budget, process_bytes=process, process_peak=process, threads=2)


def base_budget() -> int:
    """The smallest budget that runs with every weight streamed."""
    budget = 100 * MB
    while True:
        try:
            plan(FILE, resources(budget), LIMITS)
            return budget
        except MemoryBudgetError:
            budget += 10_000


def test_without_a_budget_every_layer_is_resident_on_one_cpu_stage():
    p = plan(FILE, resources(None), LIMITS)
    assert len(p.stages) == 1 and p.memory is None
    stage = p.stage
    assert (stage.node, stage.device, stage.layers) == ("local", "cpu", range(6))
    assert stage.residency == Residency(tuple(range(6)))
    assert stage.fused_decode and not stage.streamed
    assert explain(p, FILE) == "every weight resident: a memory map of model.gguf"


@pytest.mark.parametrize("kept", [0, 1, 4])
def test_under_a_budget_the_first_layers_that_fit_stay(kept):
    budget = base_budget() + kept * LAYER + LAYER // 2
    p = plan(FILE, resources(budget), LIMITS)
    r = p.stage.residency
    assert r.resident_layers == tuple(range(kept))
    assert r.streamed_layers == tuple(range(kept, 6))
    assert not r.table_resident and r.prefetch == 1
    assert p.stage.streamed and not p.stage.fused_decode
    assert p.memory.total <= budget < p.memory.total + LAYER


def test_a_budget_that_holds_everything_keeps_the_table_and_reads_nothing_ahead():
    p = plan(FILE, resources(10**9), LIMITS)
    r = p.stage.residency
    assert r.resident_layers == tuple(range(6)) and r.streamed_layers == () and r.table_resident
    assert r.prefetch == 0


def test_plan_is_plan_memory_with_the_measured_figures():
    budget = base_budget() + 2 * LAYER
    p = plan(FILE, resources(budget, process=100 * MB), LIMITS)
    assert p.memory == plan_memory(FILE, budget, 64, 1, 100 * MB, 100 * MB, 2)


def test_budgets_too_small_are_refused_with_figures():
    with pytest.raises(MemoryBudgetError, match=r"below what this run needs with every weight streamed: \d+ MB"):
        plan(FILE, resources(base_budget() - 20_000), LIMITS)
    started = Resources(150 * MB, process_bytes=100 * MB, process_peak=200 * MB, threads=2)
    with pytest.raises(MemoryBudgetError, match="needed to start: it reached 200 MB"):
        plan(FILE, started, LIMITS)


def test_a_cluster_stage_plans_only_its_layers_without_table_or_logits():
    """A stage holds layers [2, 5) and neither embeds nor projects: its plan counts their KV cache, no table, no
    table buffers and no logits; the first of them that fit stay, the rest stream, and the table is never kept."""
    whole = plan_memory(FILE, 10**9, 64, 1, 100 * MB, 100 * MB, 2)
    stage = plan_memory(FILE, 10**9, 64, 1, 100 * MB, 100 * MB, 2, layers=range(2, 5))
    assert stage.resident_layers == [2, 3, 4] and stage.streamed_layers == [] and not stage.table_resident
    assert stage.kv_cache * 6 == whole.kv_cache * 3
    assert whole.working - stage.working == 2 * CONFIG.vocab_size * 4
    assert stage.table_bytes == 0 and stage.buffers == 0
    smallest = stage.process + stage.kv_cache + stage.working + 2 * LAYER
    tight = plan_memory(FILE, smallest + LAYER, 64, 1, 100 * MB, 100 * MB, 2, layers=range(2, 5))
    assert tight.resident_layers == [2] and tight.streamed_layers == [3, 4] and tight.total <= smallest + LAYER
    with pytest.raises(MemoryBudgetError, match="this node's netboot-max-memory 1"):
        plan_memory(FILE, smallest - 1, 64, 1, 100 * MB, 100 * MB, 2, layers=range(2, 5),
                    limit="this node's netboot-max-memory")
