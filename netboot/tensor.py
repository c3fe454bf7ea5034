"""A weight tensor as it lies in the model file, and the products the model computes on it.

Weights stay in the file's own (possibly quantized) form: `QTensor.data` is a view of the block bytes,
one row of blocks per output row. A product with a few vectors (decoding) is computed straight from the
blocks by a compiled kernel; a product with many (a prompt) dequantizes a bounded chunk of rows at a time
and hands it to BLAS, so no tensor is ever expanded to float32 whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netboot import quant
from netboot.ggml import GGMLType, row_bytes

# Up to this many vectors a product reads the blocks directly (each row's bytes once for all vectors); above it,
# dequantizing chunks for BLAS's matrix-matrix product is faster.
MATVEC_MAX = 4


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
    if not isinstance(w, QTensor):  # a matrix read in chunks from where it lies (netboot.streaming)
        return w.product(x)
    from netboot import kernels  # numba loads on first use: reading a model's header does not need it

    product = kernels.matvec if x.shape[0] <= MATVEC_MAX else kernels.matmul
    return product(w.data, w.qtype, x)


def vector(w: QTensor) -> np.ndarray:
    """A 1-D weight (a norm's scale) as float32."""
    return w.dequantize().reshape(-1)
