"""A weight tensor as it lies in the model file: `QTensor.data` is a view of its block bytes, one row of blocks per
output row, never expanded. The products and dequantization on those blocks are the backends' (a QTensor does not
compute); a QTensor is a `Matrix` (`netboot.tensors.matrix`) as it stands, all of its rows in memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netboot.errors import FormatError
from netboot.tensors.ggml import GGMLType, row_bytes
from netboot.tensors.matrix import check_rows

# The unquantized types as numpy reads them: their values need no kernel.
FLOAT_DTYPES = {GGMLType.F32: np.dtype("<f4"), GGMLType.F16: np.dtype("<f2")}


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

    def map_rows(self, fn: Callable[[QTensor], np.ndarray]) -> np.ndarray:
        return fn(self)

    def select_rows(self, ids: np.ndarray) -> QTensor:
        ids = check_rows(ids, self.rows, self.name)
        return QTensor(self.name, self.qtype, (ids.size, self.cols), self.data[ids])

    def to_float32(self) -> np.ndarray:
        """The values of an F32, F16 or BF16 tensor (small ones: rope factors, norms read at open), in its shape."""
        raw = np.ascontiguousarray(self.data).reshape(-1)
        if self.qtype == GGMLType.BF16:
            values = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif self.qtype in FLOAT_DTYPES:
            values = raw.view(FLOAT_DTYPES[self.qtype]).astype(np.float32)
        else:
            raise FormatError(f"tensor {self.name} is {self.qtype.name}, expected F32, F16 or BF16")
        return values.reshape(self.shape)
