"""The CPU backend: numba kernels compiled once and cached on disk (`jit` keys the cache by this folder's sources).

    blocks.py   per-type block layouts and the row kernels (dequantize, matrix-vector)
    simd.py     explicit-SIMD dot products (LLVM intrinsics)
    ops.py      norms, RoPE, GLU activations, one-query attention
    kernels.py  the threaded products on rows of blocks (matvec direct, matmul via dequantized chunks + BLAS)
    dequant.py  block bytes -> float32, checked
    linear.py   x @ W.T on a weight matrix in its own blocks (resident or streamed in chunks)
    fused.py    one decoding layer as one compiled call (the backend's fused capability)
    warm.py     load or compile every kernel before the first token
    backend.py  `CpuBackend`: the `Backend` protocol on these kernels
"""
