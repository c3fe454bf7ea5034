"""A weight tensor as it lies in the model file, and the products the model computes on it.

Weights stay in the file's own (possibly quantized) form: `QTensor.data` is a view of the block bytes,
one row of blocks per output row. Products dequantize a bounded chunk of rows at a time, so no
tensor is ever expanded to float32 whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netboot import quant
from netboot.ggml import GGMLType, row_bytes

# Rows dequantized at once: bounds the float32 scratch of one product to CHUNK_ELEMS * 4 bytes (1 MB, which
# stays in cache: measured faster than larger chunks).
CHUNK_ELEMS = 1 << 18


@dataclass(frozen=True)
class QTensor:
    """`shape` is in numpy order: (rows, cols) for a matrix, (n,) for a vector; `data` is (rows, row_bytes) uint8."""

    name: str
    qtype: GGMLType
    shape: tuple[int, ...]
    data: np.ndarray
    offset: int = 0  # where the tensor's bytes start in the model file

    @classmethod
    def from_bytes(cls, name: str, qtype: GGMLType, shape: tuple[int, ...], raw: np.ndarray, offset: int = 0):
        cols = shape[-1]
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        return cls(name, qtype, tuple(shape), raw.reshape(rows, row_bytes(qtype, cols)), offset)

    @property
    def nbytes(self) -> int:
        return self.data.size

    @property
    def rows(self) -> int:
        return self.data.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def dequantize(self) -> np.ndarray:
        return quant.dequantize(self.data, self.qtype, self.cols).reshape(self.shape)

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` as float32 (an embedding lookup): only those rows' bytes are read."""
        return quant.dequantize(self.data[np.asarray(ids)], self.qtype, self.cols)


def matmul(x: np.ndarray, w: QTensor) -> np.ndarray:
    """x @ w.T for x of shape (n, cols), computed on the block bytes of w; returns (n, rows) float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if w.qtype == GGMLType.F32:
        return x @ w.data.view(np.float32).T
    out = np.empty((x.shape[0], w.rows), dtype=np.float32)
    step = max(1, CHUNK_ELEMS // w.cols)
    for start in range(0, w.rows, step):
        block = quant.dequantize(w.data[start : start + step], w.qtype, w.cols)
        # Not matmul(out=...): numpy leaves BLAS for its slow loop when `out` is a strided column slice.
        out[:, start : start + block.shape[0]] = x @ block.T
    return out


def vector(w: QTensor) -> np.ndarray:
    """A 1-D weight (a norm's scale) as float32."""
    return w.dequantize().reshape(-1)
