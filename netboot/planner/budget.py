"""How a memory budget (`--max-memory`) splits into what the process holds, the KV cache, working memory, the
streaming buffers, and the layers (and embedding table) that can stay resident."""

from __future__ import annotations

from dataclasses import dataclass, field

from netboot.config import PREFILL_BATCH
from netboot.errors import MemoryBudgetError
from netboot.formats import ModelFile
from netboot.formats.names import EMBEDDING, OUTPUT, layer_spans
from netboot.placement.base import Residency

MB = 10**6  # sizes are shown and parsed (--max-memory 160MB) in SI units
# A streamed table is read this much at a time: the largest the budget allows, as bigger reads cost less per byte
# (one HTTP request per chunk; on loopback 2 MiB ranges ran at 1.3 GB/s, 8 MiB at 2.3 GB/s), down to the smallest.
CHUNK_SIZES = (8 << 20, 4 << 20, 2 << 20)
CHUNK_BYTES = CHUNK_SIZES[-1]
# Thread stacks, BLAS's buffers, Python objects of a forward pass, the heap's growth: what `working_bytes` does not
# count by shape. Measured on the default model streamed under 160 MB once the loading's freed heap went back to
# the OS (`memory.trim_heap`) instead of being reused by the forward pass: with 8 MiB here the run peaked 1.7 MB
# over its plan; with 12 MiB at 159.3 MB over HTTP, 0.4 MB under the plan. 14 MiB keeps a margin of a few MB.
WORKING_BASE = 14 << 20


@dataclass
class MemoryPlan:
    budget: int
    process: int  # resident when planning: interpreter, libraries, kernels, tokenizer
    kv_cache: int
    working: int
    buffers: int  # streaming buffers
    resident_layers: list[int]
    streamed_layers: list[int]
    table_resident: bool
    prefetch: int
    layer_bytes: dict[int, int] = field(default_factory=dict)
    table_bytes: int = 0
    chunk_bytes: int = CHUNK_BYTES  # a streamed table's read size

    @property
    def resident_bytes(self) -> int:
        table = self.table_bytes if self.table_resident else 0
        return sum(self.layer_bytes[i] for i in self.resident_layers) + table

    @property
    def total(self) -> int:
        return self.process + self.kv_cache + self.working + self.buffers + self.resident_bytes

    @property
    def residency(self) -> Residency:
        return Residency(tuple(self.resident_layers), tuple(self.streamed_layers), self.table_resident,
                         self.prefetch, self.chunk_bytes)


def kv_bytes(file: ModelFile, positions: int, n_layers: int | None = None) -> int:
    c = file.config
    return 2 * (c.n_layers if n_layers is None else n_layers) * c.n_kv_heads * c.head_dim * 4 * positions


def working_bytes(file: ModelFile, positions: int, threads: int, scratch_per_thread: int = 1 << 20,
                  logits: bool = True) -> int:
    """What a forward pass allocates beyond weights and KV cache: activations of a prompt batch (hidden states,
    q/k/v, the feed-forward's three temporaries, attention scores), the dequantization scratch of each thread, and
    (`logits`: the process projects) the logits and their sampling copy."""
    c = file.config
    t = min(positions, PREFILL_BATCH)
    activations = t * (8 * c.dim + 4 * c.ffn_dim + 3 * c.n_heads * c.head_dim + c.n_heads * positions) * 4
    scratch = threads * scratch_per_thread
    return WORKING_BASE + activations + scratch + (2 * c.vocab_size * 4 if logits else 0)


def plan_memory(file: ModelFile, budget: int, positions: int, prefetch: int, process: int, started: int | None = None,
                threads: int = 1, compiled: bool = False, scratch_per_thread: int = 1 << 20,
                layers: range | None = None, limit: str = "--max-memory") -> MemoryPlan:
    """What stays resident and what streams under `budget` bytes of peak RSS, for a run of up to `positions`
    tokens. First the table's read size (the largest of CHUNK_SIZES that fits), then layers kept resident (each
    one saves its bytes on every token), then the embedding table. `compiled`: this process compiled the kernels
    (nothing cached yet), which takes more memory than loading them. `process`: bytes the process holds now;
    `started`: the most it held so far (None: not checked); `threads`: the threads a product runs on. `layers`: a
    cluster stage's range, whose process neither embeds nor projects (no table, no logits); default all. `limit`:
    where the budget came from, for the errors."""
    if started is not None and started > budget:
        why = ("compiling the kernels, which only a first run does: run once without --max-memory to cache them"
               if compiled else "loading the interpreter, numba and the compiled kernels, before any weight")
        raise MemoryBudgetError(
            f"{limit} {budget / MB:.0f} MB is below what this process needed to start: it reached "
            f"{started / MB:.0f} MB {why}"
        )
    stage = layers is not None
    layers = range(file.config.n_layers) if layers is None else layers
    spans = {i: s for i, s in layer_spans(file).items() if i in layers}
    table = 0 if stage else table_bytes(file)
    prefetch = max(0, min(prefetch, len(layers) - 1))
    kv = kv_bytes(file, positions, len(layers))
    working = working_bytes(file, positions, threads, scratch_per_thread, logits=not stage)
    largest = max(s.nbytes for s in spans.values())

    def buffers_for(layer_buffers: int, chunk_bytes: int) -> int:
        chunks = 2 * (min(chunk_bytes, table) + 8192) if table else 0  # + a direct read's alignment
        return layer_buffers * largest + chunks

    for chunk_bytes in CHUNK_SIZES:
        buffers = buffers_for(prefetch + 1, chunk_bytes)
        plan = MemoryPlan(budget, process, kv, working, buffers, [], list(layers), False, prefetch,
                          {i: s.nbytes for i, s in spans.items()}, table, chunk_bytes)
        if plan.total <= budget:
            break
    if plan.total > budget:
        raise MemoryBudgetError(
            f"{limit} {budget / MB:.0f} MB is below what this run needs with every weight streamed: "
            f"{plan.total / MB:.0f} MB (the process already holds {process / MB:.0f} MB, the KV cache for "
            f"{positions} positions {kv / MB:.0f} MB, working memory {working / MB:.0f} MB, streaming "
            f"buffers {buffers / MB:.0f} MB)"
        )
    for i in layers:
        if plan.total + spans[i].nbytes > budget:
            break
        plan.resident_layers.append(i)
        plan.streamed_layers.remove(i)
    if not plan.streamed_layers:
        plan.buffers = buffers_for(0, chunk_bytes)
        plan.prefetch = 0
    if table and plan.total + table <= budget:
        plan.table_resident = True
    return plan


def table_bytes(file: ModelFile) -> int:
    """The embedding table and, when it is not tied to it, the output projection: what embeds and projects."""
    out = file.tensors.get(OUTPUT)
    return file.tensors[EMBEDDING].nbytes + (out.nbytes if out is not None else 0)
