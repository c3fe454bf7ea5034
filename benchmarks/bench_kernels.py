"""Kernel micro-benchmark: GB/s of weight bytes each kernel processes, against this machine's memory bandwidth
measured in the same run.

    python benchmarks/bench_kernels.py --threads 2

For every tensor type: the matrix-vector product (decoding) on a 16384 x 2048 tensor of random blocks (long rows,
like a large model's weights), and the dequantization that prefill feeds to BLAS. Then the default model's own
shapes: its tied output table (Q8_0, 262144 x 640) and its most common layer (Q5_0, 2048 x 640); a tensor under
128 MB is cycled through copies of it, 128 MB in all, so each product reads from memory as in a model, not
from cache. The peers, measured in the same run: a parallel read of a 1 GiB buffer (the bandwidth bound a
matrix-vector product cannot beat) and numpy's float32 matrix-vector product (BLAS sgemv) on a float32 tensor of
the long-row shape. Times are the best of --repeat runs (this machine's speed drifts with its neighbours' load;
the best run is the stable figure).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cpu_info import cpu_description, netboot_commit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # support.quantdata: random blocks

# The default model's (Gemma 3 270M Q4_K_M) shapes as (type name, rows, cols): the tied output table, the most
# common layer (FFN gate and up).
MODEL_SHAPES = [("Q8_0", 262144, 640), ("Q5_0", 2048, 640)]
MODEL_BYTES = 128 << 20  # copies of a smaller tensor up to this many bytes: 4x this machine's 32 MB of L3


def best_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

    import numpy as np
    from numba import njit, prange
    from support.quantdata import random_blocks
    from threadpoolctl import threadpool_limits

    from netboot.backends.cpu import kernels
    from netboot.tensors.ggml import SUPPORTED_TYPES, GGMLType, row_bytes

    @njit(parallel=True, cache=True)
    def read_all(words):
        total = 0
        for i in prange(words.size):
            total += words[i]
        return total

    words = np.ones(1 << 27, dtype=np.uint64)  # 1 GiB
    bandwidth = words.nbytes / best_time(lambda: read_all(words), 5) / 1e9
    dense = np.random.default_rng(0).standard_normal((args.rows, args.cols)).astype(np.float32)
    v = np.ones(args.cols, dtype=np.float32)
    with threadpool_limits(args.threads, user_api="blas"):
        sgemv = dense.nbytes / best_time(lambda: dense @ v, args.repeat) / 1e9
    words = dense = None  # free 1.1 GB before the kernels run

    print(cpu_description())
    print(f"netboot {netboot_commit()}; threads {args.threads}; best of {args.repeat}")
    print(f"memory read bandwidth (parallel sum of 1 GiB): {bandwidth:.1f} GB/s; "
          f"numpy float32 sgemv {args.rows} x {args.cols}: {sgemv:.1f} GB/s ({sgemv / bandwidth:.2f} of bandwidth)")
    print(f"| {'type':<5} | {'shape':>13} | {'MB':>6} | {'copies':>6} | {'matvec ms':>9} | {'matvec GB/s':>11} | "
          f"{'of bandwidth':>12} | {'dequantize Gelem/s':>18} |")
    print(f"|{'-' * 7}|{'-' * 14}:|{'-' * 7}:|{'-' * 7}:|{'-' * 10}:|{'-' * 12}:|{'-' * 13}:|{'-' * 19}:|")

    def measure(qtype: GGMLType, rows: int, cols: int, copies: int) -> None:
        """One table row: matvec (each call on the next of `copies` copies) and dequantize_rows of one chunk."""
        raw = random_blocks(qtype, rows, cols, np.random.default_rng(int(qtype)))
        raw.flags.writeable = False  # as a memory-mapped model's bytes are
        tensors = [raw] + [np.copy(raw) for _ in range(copies - 1)]
        for t in tensors:
            t.flags.writeable = False
        x = np.random.default_rng(1).standard_normal((1, cols)).astype(np.float32)
        t = best_time(lambda: [kernels.matvec(w, qtype, x) for w in tensors], args.repeat) / copies
        chunk = raw[: max(1, kernels.CHUNK_ELEMS // cols)]
        scratch = np.empty((chunk.shape[0], cols), dtype=np.float32)
        td = best_time(lambda: kernels.dequantize_rows(chunk, qtype, cols, scratch), args.repeat)
        gbs = raw.nbytes / t / 1e9
        print(f"| {qtype.name:<5} | {f'{rows} x {cols}':>13} | {raw.nbytes / 1e6:>6.1f} | {copies:>6} | "
              f"{t * 1e3:>9.3f} | {gbs:>11.1f} | {gbs / bandwidth:>12.2f} | "
              f"{chunk.shape[0] * cols / td / 1e9:>18.2f} |", flush=True)

    for qtype in sorted(SUPPORTED_TYPES):
        measure(qtype, args.rows, args.cols, 1)
    for name, rows, cols in MODEL_SHAPES:
        qtype = GGMLType[name]
        measure(qtype, rows, cols, max(1, MODEL_BYTES // (rows * row_bytes(qtype, cols))))


if __name__ == "__main__":
    main()
