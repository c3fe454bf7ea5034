"""Kernel micro-benchmark: GB/s of weight bytes each kernel processes, against this machine's memory bandwidth
measured in the same run.

    python benchmarks/bench_kernels.py --threads 2

For every tensor type: the matrix-vector product (decoding) on a 16384 x 2048 tensor of random blocks (well out
of cache, like a model's weights), and the dequantization that prefill feeds to BLAS. The peers, measured in
the same run: a parallel read of a 1 GiB buffer (the bandwidth bound a matrix-vector product cannot beat) and
numpy's float32 matrix-vector product (BLAS sgemv) on a float32 tensor of the same shape. Times are the best
of --repeat runs (this machine's speed drifts with its neighbours' load; the best run is the stable figure).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # support.quantdata: random blocks


def best_time(fn, repeat: int) -> float:
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
    from netboot.tensors.ggml import SUPPORTED_TYPES

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

    print(f"threads {args.threads}; tensor {args.rows} x {args.cols}; best of {args.repeat}")
    print(f"memory read bandwidth (parallel sum of 1 GiB): {bandwidth:.1f} GB/s; "
          f"numpy float32 sgemv: {sgemv:.1f} GB/s ({sgemv / bandwidth:.2f} of bandwidth)")
    print(f"| {'type':<5} | {'MB':>6} | {'matvec ms':>9} | {'matvec GB/s':>11} | {'of bandwidth':>12} | "
          f"{'dequantize Gelem/s':>18} |")
    print(f"|{'-' * 7}|{'-' * 7}:|{'-' * 10}:|{'-' * 12}:|{'-' * 13}:|{'-' * 19}:|")
    x = np.random.default_rng(1).standard_normal((1, args.cols)).astype(np.float32)
    for qtype in sorted(SUPPORTED_TYPES):
        raw = random_blocks(qtype, args.rows, args.cols, np.random.default_rng(int(qtype)))
        raw.flags.writeable = False  # as a memory-mapped model's bytes are
        t = best_time(lambda raw=raw, qtype=qtype: kernels.matvec(raw, qtype, x), args.repeat)
        chunk = raw[: max(1, kernels.CHUNK_ELEMS // args.cols)]
        scratch = np.empty((chunk.shape[0], args.cols), dtype=np.float32)
        td = best_time(lambda c=chunk, q=qtype, s=scratch: kernels.dequantize_rows(c, q, args.cols, s), args.repeat)
        gbs = raw.nbytes / t / 1e9
        print(f"| {qtype.name:<5} | {raw.nbytes / 1e6:>6.1f} | {t * 1e3:>9.2f} | {gbs:>11.1f} | "
              f"{gbs / bandwidth:>12.2f} | {chunk.shape[0] * args.cols / td / 1e9:>18.2f} |")


if __name__ == "__main__":
    main()
