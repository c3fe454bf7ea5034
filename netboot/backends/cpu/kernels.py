"""Compiled kernels over the rows of a GGML tensor: dequantization and products, multi-threaded.

Two numba kernels in `blocks` serve every tensor type (they dispatch per row on the type id); their machine
code is cached on disk, so a second start loads it instead of compiling again.

- A product with a few vectors (decoding) reads the blocks directly: `blocks.matvec_rows`, parallel over rows on numba's
  threads. Weight bytes are read once, never expanded.
- A product with many vectors (a prompt) is compute-bound, so BLAS does the multiplying: each worker thread takes
  a slab of rows, dequantizes CHUNK_ELEMS of it at a time into a float32 scratch (nogil) and multiplies that with
  single-threaded BLAS. BLAS's own threads are kept at one: their spin-waiting fights numba's threads for the
  cores (measured 10x slower prefill with both pools at 2 threads on 2 cores).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from netboot.backends.cpu import blocks
from netboot.backends.cpu.simd import FIXED_WIDTHS, MANY
from netboot.backends.cpu.threads import ThreadTuner, idle_seconds
from netboot.tensors.ggml import GGMLType

# Every fp16 bit pattern's float32 value: block scales are read through it.
FP16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
FP16.flags.writeable = False
N16 = 16  # passed to every kernel at run time: see `netboot.backends.cpu.blocks` for why it is not a constant
# Rows dequantized at once per worker: a float32 scratch of CHUNK_ELEMS * 4 bytes (1 MB, which stays in cache).
CHUNK_ELEMS = 1 << 18


def readonly(a: np.ndarray) -> np.ndarray:
    """One array type for every caller (a memory map is read-only, a test's array is not): one compilation each."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def writable(a: np.ndarray) -> np.ndarray:
    """Vectors are passed writable (those the model makes are): one compilation for both kinds of caller."""
    return a if a.flags.writeable else a.copy()


def dequantize_rows(data: np.ndarray, qtype: GGMLType, cols: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of blocks, uint8 (rows, row_bytes) C-contiguous -> float32 (rows, cols), into `out` if given."""
    if out is None:
        out = np.empty((data.shape[0], cols), dtype=np.float32)
    blocks.dequantize_rows(int(qtype), readonly(data), FP16, N16, out)
    return out


# Whether products of a few vectors use the batch kernels (blocks.matvec_fixed / matvec_many: a serving engine's
# step). A process that never batches (`netboot run` under --max-memory) leaves their 8 MB of code unloaded, and
# its few-vector products (a short prompt) read each row once per vector, up to FEW vectors.
_batched = True
FEW = 4


def use_batched(on: bool) -> None:
    global _batched
    _batched = on


def matvec_max() -> int:
    """The most vectors a product reads the blocks directly for; above it, dequantized chunks and BLAS."""
    return MANY if _batched else FEW


def matvec(data: np.ndarray, qtype: GGMLType, x: np.ndarray) -> np.ndarray:
    """x @ W.T for a few vectors x (n, cols) float32 C-contiguous, W given as its rows of blocks -> (n, rows)."""
    n = x.shape[0]
    if n > 1 and _batched and int(qtype) in blocks.FIXED_TYPES:
        return np.concatenate([_fixed(data, qtype, x[lo : lo + 8]) for lo in range(0, n, 8)])
    if 1 < n <= MANY and _batched and int(qtype) in blocks.MANY_TYPES:
        return blocks.matvec_many(int(qtype), readonly(data), writable(x), FP16, N16, _threads)
    return blocks.matvec(int(qtype), readonly(data), writable(x), FP16, N16, _threads)


def _fixed(data: np.ndarray, qtype: GGMLType, x: np.ndarray) -> np.ndarray:
    """Up to 8 vectors through the fixed-width batch kernel, padded with zero vectors to its next width."""
    n = x.shape[0]
    if n == 1:
        return blocks.matvec(int(qtype), readonly(data), writable(np.ascontiguousarray(x)), FP16, N16, _threads)
    width = next(w for w in FIXED_WIDTHS if w >= n)
    if width != n:
        x = np.concatenate([x, np.zeros((width - n, x.shape[1]), dtype=np.float32)])
    return blocks.matvec_fixed(int(qtype), readonly(data), writable(np.ascontiguousarray(x)), FP16,
                              _threads)[:n]


def matmul(data: np.ndarray, qtype: GGMLType, x: np.ndarray) -> np.ndarray:
    """x @ W.T for many vectors x (n, cols) float32 C-contiguous, through dequantized chunks and BLAS."""
    n, cols = x.shape
    rows = data.shape[0]
    out = np.empty((n, rows), dtype=np.float32)
    step = max(1, CHUNK_ELEMS // cols)

    def slab(start: int, stop: int) -> None:
        scratch = np.empty((min(step, stop - start), cols), dtype=np.float32)
        for lo in range(start, stop, step):
            hi = min(stop, lo + step)
            w = dequantize_rows(data[lo:hi], qtype, cols, scratch[: hi - lo])
            # Not matmul(out=...): numpy leaves BLAS for its slow loop when `out` is a strided column slice.
            out[:, lo:hi] = x @ w.T

    workers = min(_threads, -(-rows // step))
    per = -(-rows // workers)
    bounds = [(lo, min(rows, lo + per)) for lo in range(0, rows, per)]
    if len(bounds) == 1:
        slab(*bounds[0])
    else:
        for job in [_pool().submit(slab, lo, hi) for lo, hi in bounds]:
            job.result()
    return out


_threads = numba.config.NUMBA_NUM_THREADS
_executor: ThreadPoolExecutor | None = None
_blas_limit = threadpool_limits(limits=1, user_api="blas")
# Whether the thread count is the user's (--threads sets this variable, or set_threads was called): then the
# ThreadTuner does not change it.
_count_fixed = os.environ.get("NETBOOT_THREADS_FIXED") == "1"
_tuner: ThreadTuner | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:  # as many workers as numba's pool; a product uses _threads of them
        _executor = ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS, thread_name_prefix="netboot-matmul")
    return _executor


def thread_count() -> int:
    return _threads


def _use_threads(n: int) -> int:
    global _threads
    _threads = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(_threads)  # for the calling thread: the one that computes
    return _threads


def set_threads(n: int) -> int:
    """Use n threads from now on, untuned (bounded by numba's pool, NUMBA_NUM_THREADS at start); returns the number
    in use."""
    global _count_fixed
    _count_fixed = True
    return _use_threads(n)


def step(size: int) -> AbstractContextManager[None]:
    """One forward pass of `size` tokens, run inside the block: timed to tune the thread count (ThreadTuner)
    unless the count is fixed or there is only one."""
    global _tuner
    if _count_fixed or numba.config.NUMBA_NUM_THREADS == 1:
        return nullcontext()
    if _tuner is None:
        _tuner = ThreadTuner(numba.config.NUMBA_NUM_THREADS, _use_threads, idle=idle_seconds)
    return _tuner.step(size)
