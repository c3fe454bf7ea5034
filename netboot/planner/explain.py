"""`--explain`: where each layer's weights come from, and the memory accounting, for any `Plan`."""

from __future__ import annotations

from netboot.formats import ModelFile
from netboot.planner.budget import MB
from netboot.planner.plan import Plan
from netboot.sources.base import ByteSource


def explain(plan: Plan, file: ModelFile, source: ByteSource | None = None) -> str:
    memory = plan.memory
    if memory is None or source is None:
        return f"every weight resident: a memory map of {file.path}"
    where = f"streamed from {source.kind} ({source.name})"
    lines = [f"memory budget {memory.budget / MB:.1f} MB; planned peak {memory.total / MB:.1f} MB:",
             f"  process before weights  {memory.process / MB:8.1f} MB  (interpreter, libraries, kernels, tokenizer)",
             f"  KV cache                {memory.kv_cache / MB:8.1f} MB",
             f"  working memory          {memory.working / MB:8.1f} MB  (activations, scratch, logits)",
             f"  streaming buffers       {memory.buffers / MB:8.1f} MB  (prefetch depth {memory.prefetch})",
             f"  resident weights        {memory.resident_bytes / MB:8.1f} MB"]
    residency = plan.stage.residency
    for i in range(file.config.n_layers):
        state = "resident" if i in residency.resident_layers else where
        lines.append(f"layer {i:3d}  {memory.layer_bytes[i] / MB:7.2f} MB  {state}")
    table = ("resident" if residency.table_resident
             else f"{where}, in {residency.chunk_bytes >> 20} MiB chunks; lookups read rows")
    lines.append(f"embedding/output table  {memory.table_bytes / MB:7.2f} MB  {table}")
    return "\n".join(lines)
