"""Products on a weight matrix in its own blocks: a few vectors read the blocks directly, many go through
dequantized chunks and BLAS (`netboot.backends.cpu.kernels`)."""

from __future__ import annotations

import numpy as np

from netboot.tensors.matrix import Matrix
from netboot.tensors.qtensor import QTensor

# Up to this many vectors a product reads the blocks directly (each row's bytes once for all vectors, decoded once
# with the batch kernels); above it, dequantizing chunks for BLAS's matrix-matrix product is faster. Without the
# batch kernels, kernels.FEW (kernels.matvec_max()).
MATVEC_MAX = 16  # simd.MANY


def matmul(x: np.ndarray, w: Matrix) -> np.ndarray:
    """x @ w.T for x of shape (n, cols), computed on the block bytes of w (all in memory, or a run of rows at a
    time as the matrix hands them out); returns (n, rows) float32."""
    from netboot.backends.cpu import kernels  # numba loads on first use: reading a model's header does not need it

    x = np.ascontiguousarray(x, dtype=np.float32)
    product = kernels.matvec if x.shape[0] <= kernels.matvec_max() else kernels.matmul
    return w.map_rows(lambda blocks: product(blocks.data, blocks.qtype, x))


def vector(w: QTensor) -> np.ndarray:
    """A 1-D weight (a norm's scale) as float32."""
    from netboot.backends.cpu.dequant import dequantize_tensor

    return dequantize_tensor(w).reshape(-1)
