"""Dequantization of GGML tensor bytes to float32: checks its input, then runs the compiled kernel
(`kernels`, block layouts in `blocks`). Results are bit-for-bit ggml's own dequantization."""

from __future__ import annotations

import numpy as np

from netboot.errors import UnsupportedError
from netboot.tensors.ggml import SUPPORTED_TYPES, GGMLType, row_bytes, type_name
from netboot.tensors.qtensor import QTensor

DEQUANTIZABLE_TYPES = SUPPORTED_TYPES


def dequantize(raw: np.ndarray, qtype: GGMLType | int, n_cols: int) -> np.ndarray:
    """Rows of GGML blocks -> float32 of shape (rows, n_cols).

    `raw` is uint8 of shape (rows, row_bytes), or 1-D for a single row; it may be a read-only view
    of a memory-mapped file and is never written. The result is always a new, writable array.
    Raises UnsupportedError for a type that cannot be dequantized, ValueError for a shape mismatch.
    """
    if qtype not in DEQUANTIZABLE_TYPES:
        supported = ", ".join(t.name for t in sorted(DEQUANTIZABLE_TYPES))
        raise UnsupportedError(f"tensor type {type_name(int(qtype))} is not supported (supported: {supported})")
    qtype = GGMLType(qtype)
    raw = np.asarray(raw)
    if raw.ndim == 1:
        raw = raw.reshape(1, -1)
    expected = row_bytes(qtype, n_cols)
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != expected:
        raise ValueError(
            f"{qtype.name} rows of {n_cols} elements need uint8 data of shape (rows, {expected}), "
            f"got {raw.dtype} {raw.shape}"
        )
    from netboot.backends.cpu import kernels  # numba loads on first use: reading a model's header does not need it

    return kernels.dequantize_rows(np.ascontiguousarray(raw), qtype, n_cols)


def dequantize_tensor(t: QTensor) -> np.ndarray:
    """A whole tensor as float32, in its shape."""
    return dequantize(t.data, t.qtype, t.cols).reshape(t.shape)
