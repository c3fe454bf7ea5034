"""Weights read from a `ByteSource` as the forward pass needs them: the layers a `Residency` keeps are read once,
the others into a few reusable buffers, with the next layer being read while this one computes (how much may stay
is the planner's decision: `netboot.planner.budget`).

- `StreamedWeights` serves `Model` through the `Weights` calls; `layer(i)` hands out views of a buffer that is
  reused once layer i + prefetch is asked for, which the forward pass's order (layer after layer) guarantees.
- `StreamedMatrix` is a large matrix (the embedding / tied output table) read in chunks: a product streams it
  with the next chunk in flight, an embedding lookup reads only the rows it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from netboot.formats import ModelFile
from netboot.formats.names import EMBEDDING, OUTPUT, OUTPUT_NORM, Span, layer_spans
from netboot.placement.base import Residency
from netboot.sources.base import ByteSource, aligned_buffer
from netboot.sources.digests import Expected, verified
from netboot.tensors.ggml import row_bytes
from netboot.tensors.matrix import check_rows
from netboot.tensors.qtensor import QTensor


class StreamedMatrix:
    """A (rows, cols) matrix of blocks left in its source (the embedding / output table): a product reads it a chunk
    of rows at a time with the next chunk in flight, a lookup reads only the rows it needs."""

    def __init__(self, index: QTensor, source: ByteSource, pool: ThreadPoolExecutor, chunk_bytes: int,
                 digest: Expected | None = None):
        self.name, self.qtype, self.shape = index.name, index.qtype, index.shape
        self.digest = digest  # (name, hex) of the whole matrix: each product checks the bytes it streamed
        self.offset, self.rows, self.cols = index.offset, index.rows, index.cols
        self.row_bytes = row_bytes(self.qtype, self.cols)
        self.chunk_rows = max(1, chunk_bytes // self.row_bytes)
        self._source, self._pool = source, pool
        self._buffers = [aligned_buffer(self.chunk_rows * self.row_bytes) for _ in range(2)]
        self._row_buffer = aligned_buffer(self.row_bytes)

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def map_rows(self, fn: Callable[[QTensor], np.ndarray]) -> np.ndarray:
        """`fn` on each chunk of rows, reading the matrix once; with a known digest the bytes are checked as they
        stream, and a pass over bad bytes is done again once before failing."""
        return verified(lambda _, hasher: self._map_rows(fn, hasher), self.digest, self.name, self._source.name)

    def _chunk(self, stream, k: int, hasher) -> QTensor:
        lo = k * self.chunk_rows
        hi = min(self.rows, lo + self.chunk_rows)
        raw = stream.read((hi - lo) * self.row_bytes, self._buffers[k % 2])
        if hasher is not None:
            hasher.update(raw)  # chunks are read in order, by the one fetch thread
        return QTensor.from_bytes(self.name, self.qtype, (hi - lo, self.cols), raw)

    def _map_rows(self, fn: Callable[[QTensor], np.ndarray], hasher) -> np.ndarray:
        # One read of the whole matrix (a single Range request over HTTP), taken a chunk at a time, in order.
        stream = self._source.stream(self.offset, self.nbytes, "table")
        out = None
        chunks = -(-self.rows // self.chunk_rows)
        pending: Future = self._pool.submit(self._chunk, stream, 0, hasher)
        try:
            for k in range(chunks):
                chunk = pending.result()
                if k + 1 < chunks:
                    pending = self._pool.submit(self._chunk, stream, k + 1, hasher)
                part = fn(chunk)
                if out is None:
                    out = np.empty((*part.shape[:-1], self.rows), dtype=part.dtype)
                lo = k * self.chunk_rows
                out[..., lo : lo + chunk.rows] = part
        finally:
            wait([pending])  # a read still in flight (after a failure) must end before the stream closes
            stream.close()
        return out

    def select_rows(self, ids: np.ndarray) -> QTensor:
        """Rows `ids` as blocks, reading only those rows."""
        ids = check_rows(ids, self.rows, self.name)
        data = np.empty((ids.size, self.row_bytes), dtype=np.uint8)
        for j, row in enumerate(ids.tolist()):
            data[j] = self._source.read(self.offset + row * self.row_bytes, self.row_bytes, self._row_buffer)
        return QTensor(self.name, self.qtype, (ids.size, self.cols), data)


class StreamedWeights:
    """The `Weights` of a model whose file is read through `source` as `residency` says."""

    def __init__(self, file: ModelFile, source: ByteSource, residency: Residency,
                 hashes: dict[tuple[int, int], Expected] | None = None):
        self.file, self.source, self.residency = file, source, residency
        # (digest name, hex) by byte span, from the server's catalog: every read of a span is checked
        self.hashes = hashes or {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="netboot-fetch")
        self._spans = layer_spans(file)
        self._resident: dict[int, dict[str, QTensor]] = {}
        for i in residency.resident_layers:
            span = self._spans[i]
            self._resident[i] = self._views(span, self._read(span.start, span.nbytes, aligned_buffer(span.nbytes),
                                                             f"layer {i}"))
        self._order = list(residency.streamed_layers)  # the streamed layers, in the order a forward pass asks for them
        ring = residency.prefetch + 1 if self._order else 0
        size = max((self._spans[i].nbytes for i in self._order), default=0)
        self._slots = [aligned_buffer(size) for _ in range(ring)]
        self._pending: dict[int, tuple[int, Future]] = {}  # layer -> (slot, its read)
        spans = [self._spans[i] for i in self._order]
        self._sequential = all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))
        self._stream = None
        # The config has read rope_freqs already (netboot.formats); the forward pass needs only the output norm.
        self._output_norm = self._resident_tensor(file.tensors[OUTPUT_NORM])
        table = file.tensors[EMBEDDING]
        self._embedding = self._table(table, residency.table_resident)
        output = file.tensors.get(OUTPUT)
        self._output = self._embedding if output is None else self._table(output, residency.table_resident)

    def _read(self, start: int, nbytes: int, buf: np.ndarray, what: str, stream=None) -> np.ndarray:
        """Bytes [start, start + nbytes) into buf (from `stream` when given: it stands at `start`), checked
        against their published digest if there is one."""

        def read(attempt: int, hasher) -> np.ndarray:
            if stream is not None and attempt == 0:
                raw = stream.read(nbytes, buf)
            else:
                raw = self.source.read(start, nbytes, buf)
            if hasher is not None:
                hasher.update(raw)
            return raw

        return verified(read, self.hashes.get((start, start + nbytes)), what, self.source.name,
                        f" (bytes {start}-{start + nbytes - 1})")

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
        return StreamedMatrix(t, self.source, self._pool, self.residency.chunk_bytes,
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
