"""Running a model larger than the memory it is allowed: layers resident as far as a budget allows, the rest read
from a `ByteSource` when the forward pass needs them, into a few reusable buffers, with the next layer being read
while this one computes.

- `plan_memory` splits a budget (`--max-memory`) into what the process already holds, a reserve for the KV cache
  and activations, the streaming buffers, and the layers (and embedding table) that can stay resident.
- `StreamedWeights` serves `Model` through the `Weights` calls; `layer(i)` hands out views of a buffer that is
  reused once layer i + prefetch is asked for, which the forward pass's order (layer after layer) guarantees.
- `StreamedMatrix` is a large matrix (the embedding / tied output table) read in chunks: a product streams it
  with the next chunk in flight, an embedding lookup reads only the rows it needs.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from netboot import memory
from netboot.errors import NetbootError, note
from netboot.formats import ModelFile
from netboot.ggml import row_bytes
from netboot.sources import ByteSource, aligned_buffer
from netboot.tensor import QTensor, matmul
from netboot.weights import LAYER_PARTS

MB = 10**6  # sizes are shown and parsed (--max-memory 160MB) in SI units
# A streamed table is read this much at a time: the largest the budget allows, as bigger reads cost less per byte
# (one HTTP request per chunk; on loopback 2 MiB ranges ran at 1.3 GB/s, 8 MiB at 2.3 GB/s), down to the smallest.
CHUNK_SIZES = (8 << 20, 4 << 20, 2 << 20)
CHUNK_BYTES = CHUNK_SIZES[-1]
# Thread stacks, BLAS's buffers, Python objects of a forward pass: what `working_bytes` does not count by shape.
WORKING_BASE = 8 << 20


class MemoryBudgetError(NetbootError):
    """The budget cannot hold what the run needs even with every weight streamed."""


@dataclass
class Span:
    """Bytes [start, end) of the model file holding some tensors."""

    start: int
    end: int
    tensors: list[QTensor]

    @property
    def nbytes(self) -> int:
        return self.end - self.start


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


def new_digest(name: str):
    """A hashlib-like object for a digest a catalog publishes (only a network source has them)."""
    from netboot.remote.catalog import SPAN_DIGESTS

    return SPAN_DIGESTS[name]()


def layer_spans(file: ModelFile) -> dict[int, Span]:
    spans = {}
    for i in range(file.config.n_layers):
        tensors = [t for part in LAYER_PARTS if (t := file.tensors.get(f"blk.{i}.{part}.weight")) is not None]
        spans[i] = Span(min(t.offset for t in tensors), max(t.offset + t.nbytes for t in tensors), tensors)
    return spans


def kv_bytes(file: ModelFile, positions: int) -> int:
    c = file.config
    return 2 * c.n_layers * c.n_kv_heads * c.head_dim * 4 * positions


def working_bytes(file: ModelFile, positions: int) -> int:
    """What a forward pass allocates beyond weights and KV cache: activations of a prompt batch (hidden states,
    q/k/v, the feed-forward's three temporaries, attention scores), the dequantization scratch of each thread, the
    logits and their sampling copy."""
    from netboot import kernels
    from netboot.generate import PREFILL_BATCH

    c = file.config
    t = min(positions, PREFILL_BATCH)
    activations = t * (8 * c.dim + 4 * c.ffn_dim + 3 * c.n_heads * c.head_dim + c.n_heads * positions) * 4
    scratch = kernels.thread_count() * kernels.CHUNK_ELEMS * 4
    return WORKING_BASE + activations + scratch + 2 * c.vocab_size * 4


def plan_memory(file: ModelFile, budget: int, positions: int, prefetch: int = 1,
                process: int | None = None, compiled: bool = False) -> MemoryPlan:
    """What stays resident and what streams under `budget` bytes of peak RSS, for a run of up to `positions`
    tokens. First the table's read size (the largest of CHUNK_SIZES that fits), then layers kept resident (each
    one saves its bytes on every token), then the embedding table. `compiled`: this process compiled the kernels
    (nothing cached yet), which takes more memory than loading them."""
    started = memory.peak_rss()
    if process is None and started > budget:
        why = ("compiling the kernels, which only a first run does: run once without --max-memory to cache them"
               if compiled else "loading the interpreter, numba and the compiled kernels, before any weight")
        raise MemoryBudgetError(
            f"--max-memory {budget / MB:.0f} MB is below what this process needed to start: it reached "
            f"{started / MB:.0f} MB {why}"
        )
    process = memory.rss() if process is None else process
    spans = layer_spans(file)
    table = file.tensors["token_embd.weight"].nbytes + _untied_output_bytes(file)
    n = file.config.n_layers
    prefetch = max(0, min(prefetch, n - 1))
    kv = kv_bytes(file, positions)
    working = working_bytes(file, positions)
    largest = max(s.nbytes for s in spans.values())

    def buffers_for(layer_buffers: int, chunk_bytes: int) -> int:
        return layer_buffers * largest + 2 * (min(chunk_bytes, table) + 8192)  # + a direct read's alignment

    for chunk_bytes in CHUNK_SIZES:
        buffers = buffers_for(prefetch + 1, chunk_bytes)
        plan = MemoryPlan(budget, process, kv, working, buffers, [], list(range(n)), False, prefetch,
                          {i: s.nbytes for i, s in spans.items()}, table, chunk_bytes)
        if plan.total <= budget:
            break
    if plan.total > budget:
        raise MemoryBudgetError(
            f"--max-memory {budget / MB:.0f} MB is below what this run needs with every weight streamed: "
            f"{plan.total / MB:.0f} MB (the process already holds {process / MB:.0f} MB, the KV cache for "
            f"{positions} positions {kv / MB:.0f} MB, working memory {working / MB:.0f} MB, streaming "
            f"buffers {buffers / MB:.0f} MB)"
        )
    for i in range(n):
        if plan.total + spans[i].nbytes > budget:
            break
        plan.resident_layers.append(i)
        plan.streamed_layers.remove(i)
    if not plan.streamed_layers:
        plan.buffers = buffers_for(0, chunk_bytes)
        plan.prefetch = 0
    if plan.total + table <= budget:
        plan.table_resident = True
    return plan


def _untied_output_bytes(file: ModelFile) -> int:
    out = file.tensors.get("output.weight")
    return out.nbytes if out is not None else 0


class StreamedMatrix:
    """A (rows, cols) matrix of blocks left in its source: products read it a chunk at a time, lookups read rows."""

    def __init__(self, index: QTensor, source: ByteSource, pool: ThreadPoolExecutor, chunk_bytes: int = CHUNK_BYTES,
                 digest: tuple[str, str] | None = None):
        self.name, self.qtype, self.shape = index.name, index.qtype, index.shape
        self.digest = digest  # (name, hex) of the whole matrix: each product checks the bytes it streamed
        self._hasher = None
        self.offset, self.rows, self.cols = index.offset, index.rows, index.cols
        self.row_bytes = row_bytes(self.qtype, self.cols)
        self.chunk_rows = max(1, chunk_bytes // self.row_bytes)
        self._source, self._pool = source, pool
        self._buffers = [aligned_buffer(self.chunk_rows * self.row_bytes) for _ in range(2)]
        self._row_buffer = aligned_buffer(self.row_bytes)

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def _chunk(self, stream, k: int) -> QTensor:
        lo = k * self.chunk_rows
        hi = min(self.rows, lo + self.chunk_rows)
        raw = stream.read((hi - lo) * self.row_bytes, self._buffers[k % 2])
        if self._hasher is not None:
            self._hasher.update(raw)  # chunks are read in order, by the one fetch thread
        return QTensor.from_bytes(self.name, self.qtype, (hi - lo, self.cols), raw)

    def product(self, x: np.ndarray) -> np.ndarray:
        """x @ M.T, (n, cols) -> (n, rows), reading M once with the next chunk in flight; with a known digest the
        bytes are checked as they stream, and a product over bad bytes is done again once before failing."""
        for attempt in range(2):
            self._hasher = new_digest(self.digest[0]) if self.digest else None
            out = self._product(x)
            if self._hasher is None or self._hasher.hexdigest() == self.digest[1]:
                return out
            if attempt == 0:
                note(f"{self.name} from {self._source.name} does not match its {self.digest[0]}; reading it again")
        from netboot.remote.http import IntegrityError

        raise IntegrityError(self._source.name, f"{self.name} does not match the {self.digest[0]} the server "
                                                "published, read twice: the server sends corrupt data")

    def _product(self, x: np.ndarray) -> np.ndarray:
        # One read of the whole matrix (a single Range request over HTTP), taken a chunk at a time, in order.
        stream = self._source.stream(self.offset, self.nbytes, "table")
        out = np.empty((x.shape[0], self.rows), dtype=np.float32)
        chunks = -(-self.rows // self.chunk_rows)
        pending: Future = self._pool.submit(self._chunk, stream, 0)
        try:
            for k in range(chunks):
                chunk = pending.result()
                if k + 1 < chunks:
                    pending = self._pool.submit(self._chunk, stream, k + 1)
                lo = k * self.chunk_rows
                out[:, lo : lo + chunk.rows] = matmul(x, chunk)
        finally:
            wait([pending])  # a read still in flight (after a failure) must end before the stream closes
            stream.close()
        return out

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` as float32, reading only those rows."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((ids.size, self.cols), dtype=np.float32)
        for j, row in enumerate(ids.tolist()):
            if not 0 <= row < self.rows:
                raise IndexError(f"row {row} is outside {self.name} ({self.rows} rows)")
            raw = self._source.read(self.offset + row * self.row_bytes, self.row_bytes, self._row_buffer)
            out[j] = QTensor.from_bytes(self.name, self.qtype, (1, self.cols), raw).dequantize()[0]
        return out


class StreamedWeights:
    """The `Weights` of a model whose file is read through `source` as `plan` says."""

    def __init__(self, file: ModelFile, source: ByteSource, plan: MemoryPlan,
                 hashes: dict[tuple[int, int], tuple[str, str]] | None = None):
        self.file, self.source, self.plan = file, source, plan
        # (digest name, hex) by byte span, from the server's catalog: every read of a span is checked
        self.hashes = hashes or {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="netboot-fetch")
        self._spans = layer_spans(file)
        self._resident: dict[int, dict[str, QTensor]] = {}
        for i in plan.resident_layers:
            span = self._spans[i]
            self._resident[i] = self._views(span, self._read(span.start, span.nbytes, aligned_buffer(span.nbytes),
                                                             f"layer {i}"))
        self._order = plan.streamed_layers  # the streamed layers, in the order a forward pass asks for them
        ring = plan.prefetch + 1 if self._order else 0
        size = max((self._spans[i].nbytes for i in self._order), default=0)
        self._slots = [aligned_buffer(size) for _ in range(ring)]
        self._pending: dict[int, tuple[int, Future]] = {}  # layer -> (slot, its read)
        spans = [self._spans[i] for i in self._order]
        self._sequential = all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))
        self._stream = None
        # The config has read rope_freqs already (netboot.formats); the forward pass needs only the output norm.
        self._output_norm = self._resident_tensor(file.tensors["output_norm.weight"])
        table = file.tensors["token_embd.weight"]
        self._embedding = self._table(table, plan.table_resident)
        output = file.tensors.get("output.weight")
        self._output = self._embedding if output is None else self._table(output, plan.table_resident)

    def _read(self, start: int, nbytes: int, buf: np.ndarray, what: str, stream=None) -> np.ndarray:
        """Bytes [start, start + nbytes) into buf (from `stream` when given: it stands at `start`), checked
        against their published digest if there is one: a bad read is done again once, then reported."""
        expected = self.hashes.get((start, start + nbytes))
        for attempt in range(2):
            if stream is not None and attempt == 0:
                raw = stream.read(nbytes, buf)
            else:
                raw = self.source.read(start, nbytes, buf)
            if expected is None:
                return raw
            digest = new_digest(expected[0])
            digest.update(raw)
            if digest.hexdigest() == expected[1]:
                return raw
            if attempt == 0:
                note(f"{what} from {self.source.name} does not match its {expected[0]}; reading it again")
        from netboot.remote.http import IntegrityError  # only a network source has published hashes

        raise IntegrityError(self.source.name, f"{what} (bytes {start}-{start + nbytes - 1}) does not match the "
                                               f"{expected[0]} the server published, read twice: the server sends "
                                               "corrupt data")

    @staticmethod
    def _views(span: Span, raw: np.ndarray) -> dict[str, QTensor]:
        views = {}
        for t in span.tensors:
            part = t.name.split(".")[2]
            data = raw[t.offset - span.start : t.offset - span.start + t.nbytes]
            views[part] = QTensor.from_bytes(t.name, t.qtype, t.shape, data, offset=t.offset)
        return views

    def _resident_tensor(self, t: QTensor) -> QTensor:
        """A tensor read once into memory of its own."""
        raw = self._read(t.offset, t.nbytes, aligned_buffer(t.nbytes), t.name)
        return QTensor.from_bytes(t.name, t.qtype, t.shape, raw, offset=t.offset)

    def _table(self, t: QTensor, resident: bool) -> QTensor | StreamedMatrix:
        if resident:
            return self._resident_tensor(t)
        return StreamedMatrix(t, self.source, self._pool, self.plan.chunk_bytes,
                              digest=self.hashes.get((t.offset, t.offset + t.nbytes)))

    def _fetch(self, layer: int, slot: int) -> dict[str, QTensor]:
        span = self._spans[layer]
        return self._views(span, self._read(span.start, span.nbytes, self._slots[slot], f"layer {layer}",
                                            self._layer_stream(layer)))

    def _layer_stream(self, layer: int):
        """The streamed layers, when they lie one after another in the file in the order they are asked for, are
        read as one stream per forward pass (one HTTP request, not one per layer); None where this layer is not
        next in the current one (it is read on its own)."""
        first = self._order[0]
        if layer == first and self._sequential:
            self._close_stream()
            end = self._spans[self._order[-1]].end
            self._stream = self.source.stream(self._spans[first].start, end - self._spans[first].start, "layers")
        if self._stream is None or self._stream.pos != self._spans[layer].start:
            self._close_stream()  # not where this layer starts (asked out of order, or a read failed midway)
            return None
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def layer(self, i: int) -> dict[str, QTensor]:
        if i in self._resident:
            return self._resident[i]
        p = self._order.index(i)
        ring = len(self._slots)
        if i in self._pending:
            slot, pending = self._pending.pop(i)
        else:  # not the layer expected next: nothing in flight may keep a slot
            for _, f in self._pending.values():
                f.result()
            self._pending.clear()
            slot = 0
            pending = self._pool.submit(self._fetch, i, slot)
        views = pending.result()
        # Prefetch into the slots after this one's: they held the layers before it, which are done.
        for k in range(1, ring):
            j = self._order[(p + k) % len(self._order)]
            if j != i and j not in self._pending:
                self._pending[j] = ((slot + k) % ring, self._pool.submit(self._fetch, j, (slot + k) % ring))
        return views

    def embedding(self) -> QTensor | StreamedMatrix:
        return self._embedding

    def output_norm(self) -> QTensor:
        return self._output_norm

    def output(self) -> QTensor | StreamedMatrix:
        return self._output

    def close(self) -> None:
        for _, f in self._pending.values():
            f.result()
        self._pending.clear()
        self._close_stream()
        self._pool.shutdown()
        self.source.close()


def explain(plan: MemoryPlan, file: ModelFile, source: ByteSource) -> str:
    """Where each layer's weights come from, and the memory accounting."""
    where = f"streamed from {source.kind} ({source.name})"
    lines = [f"memory budget {plan.budget / MB:.1f} MB; planned peak {plan.total / MB:.1f} MB:",
             f"  process before weights  {plan.process / MB:8.1f} MB  (interpreter, libraries, kernels, tokenizer)",
             f"  KV cache                {plan.kv_cache / MB:8.1f} MB",
             f"  working memory          {plan.working / MB:8.1f} MB  (activations, scratch, logits)",
             f"  streaming buffers       {plan.buffers / MB:8.1f} MB  (prefetch depth {plan.prefetch})",
             f"  resident weights        {plan.resident_bytes / MB:8.1f} MB"]
    for i in range(file.config.n_layers):
        state = "resident" if i in plan.resident_layers else where
        lines.append(f"layer {i:3d}  {plan.layer_bytes[i] / MB:7.2f} MB  {state}")
    table = "resident" if plan.table_resident else f"{where}, in {plan.chunk_bytes >> 20} MiB chunks; lookups read rows"
    lines.append(f"embedding/output table  {plan.table_bytes / MB:7.2f} MB  {table}")
    return "\n".join(lines)
