"""GGML block layouts, decoded by compiled code: for each tensor type, one row's dequantization and one row's
dot product with a float32 vector, computed straight from the block bytes.

Block layouts (fp16 = IEEE half, little-endian; a "nibble" is 4 bits, low nibble first):

    Q4_0  d:fp16, qs[16]                    x = d * (q - 8)      q = 4 bits
    Q4_1  d:fp16, m:fp16, qs[16]            x = d * q + m        q = 4 bits
    Q5_0  d:fp16, qh[4], qs[16]             x = d * (q - 16)     q = 4 bits | 1 high bit from qh
    Q5_1  d:fp16, m:fp16, qh[4], qs[16]     x = d * q + m
    Q8_0  d:fp16, qs:int8[32]               x = d * q
    Q4_K  d:fp16, dmin:fp16, scales[12], qs[128]            super-block of 256 = 8 sub-blocks of 32,
    Q5_K  d:fp16, dmin:fp16, scales[12], qh[32], qs[128]    x = (d * sc) * q - (dmin * m), 6-bit sc and m
    Q6_K  ql[128], qh[64], scales:int8[16], d:fp16          16 sub-blocks of 16, x = (d * sc) * (q - 32)

In the 32-element blocks the low nibbles of qs[0:16] are elements 0-15 and the high nibbles 16-31; in Q4_K and
Q5_K each run of 32 qs bytes holds two sub-blocks, low nibbles first.

Dequantization uses ggml's order of float32 operations (no fused multiply-add), so it is bit-for-bit ggml's.
Every inner loop runs `n16` or `2 * n16` times with `n16` (always 16) passed in at run time: with a constant
trip count LLVM unrolls these loops into scalar code instead of vectorizing them (measured 4 GB/s against
16 GB/s on Q8_0). The dot products of the quantized types are the explicit-SIMD ones of `netboot.backends.cpu.simd`; the
float types' (F32, F16, BF16) are here. Dot products are free to reorder (fastmath): a block's integer part is
summed against x first, and the constant parts (-8, the mins) are applied once per block through `xs`, the
sums of x over each run of 16 elements.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from netboot.backends.cpu import jit, simd  # noqa: F401 - jit first: it sets the kernel cache directory

F32 = np.float32
U32 = np.uint32
I32 = np.int32
_TWO_POW_112 = F32(2.0**112)  # moves an fp16 exponent field, placed in a float32, to its float32 value
# Bit j of a Q5 block's qh, tested as qh & _BIT[j]: numba's `>>` widens to 64 bits, which halves the vector width.
_BIT = np.array([1 << j for j in range(32)], dtype=np.uint32)


@njit(cache=True)
def half(raw):
    """IEEE half bits -> float32, exactly (subnormals, infinities and NaN included); vectorizes."""
    h = U32(raw)
    bits = U32((h & U32(0x7FFF)) << U32(13))
    finite = F32(bits.view(F32) * _TWO_POW_112).view(U32)
    special = U32(bits | U32(0x7F800000))
    sign = U32((h & U32(0x8000)) << U32(16))
    return U32((special if (h & U32(0x7C00)) == U32(0x7C00) else finite) | sign).view(F32)


@njit(cache=True)
def _fp16_at(row, o, fp16):
    # A table lookup: per block, measured 1.5x faster than `half`'s bit arithmetic on scalars.
    return fp16[I32(row[o]) | (I32(row[o + 1]) << 8)]


@njit(cache=True)
def _i32_at(row, o):
    return I32(U32(row[o]) | (U32(row[o + 1]) << 8) | (U32(row[o + 2]) << 16) | (U32(row[o + 3]) << 24))


@njit(cache=True)
def _k_scale_min(row, o, j):
    """Scale and min (6 bits each) of sub-block j of a Q4_K/Q5_K super-block whose 12 scale bytes start at o."""
    if j < 4:
        return I32(row[o + j] & 63), I32(row[o + j + 4] & 63)
    sc = (row[o + j + 4] & 15) | ((row[o + j - 4] >> 6) << 4)
    m = (row[o + j + 4] >> 4) | ((row[o + j] >> 6) << 4)
    return I32(sc), I32(m)


# ---- unquantized types: `row` is the row's bytes ----


@njit(cache=True)
def dequantize_f32(row, out, fp16, n16):
    v = row.view(F32)
    for i in range(out.size):
        out[i] = v[i]


@njit(cache=True)
def dequantize_f16(row, out, fp16, n16):
    v = row.view(np.uint16)
    for i in range(out.size):
        out[i] = half(v[i])


@njit(cache=True)
def dequantize_bf16(row, out, fp16, n16):
    v = row.view(np.uint16)
    for i in range(out.size):
        out[i] = U32(U32(v[i]) << U32(16)).view(F32)


@njit(fastmath=True, cache=True)
def dot_f32(row, x, xs, fp16, n16):
    v = row.view(F32)
    acc = F32(0)
    for i in range(x.size):
        acc += v[i] * x[i]
    return acc


@njit(fastmath=True, cache=True)
def dot_f16_converted(row, x, xs, fp16, n16, start=0):
    """From element `start` on, each fp16 weight converted by `half`'s bit arithmetic."""
    v = row.view(np.uint16)
    acc = F32(0)
    for i in range(start, x.size):
        acc += half(v[i]) * x[i]
    return acc


@njit(fastmath=True, cache=True)
def dot_f16_native(row, x, xs, fp16, n16):
    """Runs of 8 converted by the CPU (`simd.dot_f16`), the rest as `dot_f16_converted`."""
    return simd.dot_f16(row, x, fp16) + dot_f16_converted(row, x, xs, fp16, n16, x.size - x.size % 8)


dot_f16 = dot_f16_native if simd.NATIVE_HALF else dot_f16_converted  # only the one used is ever compiled


@njit(fastmath=True, cache=True)
def dot_bf16(row, x, xs, fp16, n16):
    v = row.view(np.uint16)
    acc = F32(0)
    for i in range(x.size):
        acc += U32(U32(v[i]) << U32(16)).view(F32) * x[i]
    return acc


# ---- blocks of 32 ----


@njit(cache=True)
def dequantize_q4_0(row, out, fp16, n16):
    for b in range(out.size // 32):
        o, e = b * 18, b * 32
        d = _fp16_at(row, o, fp16)
        for j in range(n16):
            q = row[o + 2 + j]
            out[e + j] = F32(I32(q & 15) - 8) * d
            out[e + 16 + j] = F32(I32(q >> 4) - 8) * d


@njit(cache=True)
def dequantize_q4_1(row, out, fp16, n16):
    for b in range(out.size // 32):
        o, e = b * 20, b * 32
        d, m = _fp16_at(row, o, fp16), _fp16_at(row, o + 2, fp16)
        for j in range(n16):
            q = row[o + 4 + j]
            out[e + j] = F32(q & 15) * d + m
            out[e + 16 + j] = F32(q >> 4) * d + m


@njit(cache=True)
def _q5_pair(row, qo, qh, j):
    """Elements j and j + 16 of a Q5_0/Q5_1 block: their nibble from qs[j] and fifth bit from qh."""
    q = row[qo + j]
    lo = I32(q & 15) | (16 if (qh & _BIT[j]) != 0 else 0)
    hi = I32(q >> 4) | (16 if (qh & _BIT[j + 16]) != 0 else 0)
    return lo, hi


@njit(cache=True)
def dequantize_q5_0(row, out, fp16, n16):
    for b in range(out.size // 32):
        o, e = b * 22, b * 32
        d, qh = _fp16_at(row, o, fp16), _i32_at(row, o + 2)
        for j in range(n16):
            lo, hi = _q5_pair(row, o + 6, qh, j)
            out[e + j] = F32(lo - 16) * d
            out[e + 16 + j] = F32(hi - 16) * d


@njit(cache=True)
def dequantize_q5_1(row, out, fp16, n16):
    for b in range(out.size // 32):
        o, e = b * 24, b * 32
        d, m, qh = _fp16_at(row, o, fp16), _fp16_at(row, o + 2, fp16), _i32_at(row, o + 4)
        for j in range(n16):
            lo, hi = _q5_pair(row, o + 8, qh, j)
            out[e + j] = F32(lo) * d + m
            out[e + 16 + j] = F32(hi) * d + m


@njit(cache=True)
def dequantize_q8_0(row, out, fp16, n16):
    qs = row.view(np.int8)
    for b in range(out.size // 32):
        o, e = b * 34, b * 32
        d = _fp16_at(row, o, fp16)
        for j in range(2 * n16):
            out[e + j] = F32(qs[o + 2 + j]) * d


@njit(cache=True)
def dequantize_q4_k(row, out, fp16, n16):
    for b in range(out.size // 256):
        o, e = b * 144, b * 256
        d, dmin = _fp16_at(row, o, fp16), _fp16_at(row, o + 2, fp16)
        for c in range(4):
            sc1, m1 = _k_scale_min(row, o + 4, 2 * c)
            sc2, m2 = _k_scale_min(row, o + 4, 2 * c + 1)
            d1, d2, min1, min2 = d * F32(sc1), d * F32(sc2), dmin * F32(m1), dmin * F32(m2)
            qo, eo = o + 16 + 32 * c, e + 64 * c
            for j in range(2 * n16):
                q = row[qo + j]
                out[eo + j] = F32(q & 15) * d1 - min1
                out[eo + 32 + j] = F32(q >> 4) * d2 - min2


@njit(cache=True)
def dequantize_q5_k(row, out, fp16, n16):
    for b in range(out.size // 256):
        o, e = b * 176, b * 256
        d, dmin = _fp16_at(row, o, fp16), _fp16_at(row, o + 2, fp16)
        for c in range(4):
            sc1, m1 = _k_scale_min(row, o + 4, 2 * c)
            sc2, m2 = _k_scale_min(row, o + 4, 2 * c + 1)
            d1, d2, min1, min2 = d * F32(sc1), d * F32(sc2), dmin * F32(m1), dmin * F32(m2)
            qo, eo = o + 48 + 32 * c, e + 64 * c
            for j in range(2 * n16):
                q, h = row[qo + j], I32(row[o + 16 + j])
                out[eo + j] = F32(I32(q & 15) | (((h >> (2 * c)) & 1) << 4)) * d1 - min1
                out[eo + 32 + j] = F32(I32(q >> 4) | (((h >> (2 * c + 1)) & 1) << 4)) * d2 - min2


@njit(cache=True)
def _q6_quad(row, o, half_, j):
    """The four elements that share ql[j], ql[j + 32] and qh[j] in one 128-element half, each in 0..63."""
    lo = row[o + 64 * half_ + j]
    hi = row[o + 64 * half_ + 32 + j]
    h = I32(row[o + 128 + 32 * half_ + j])
    q1 = I32(lo & 15) | ((h & 3) << 4)
    q2 = I32(hi & 15) | (((h >> 2) & 3) << 4)
    q3 = I32(lo >> 4) | (((h >> 4) & 3) << 4)
    q4 = I32(hi >> 4) | (((h >> 6) & 3) << 4)
    return q1, q2, q3, q4


@njit(cache=True)
def dequantize_q6_k(row, out, fp16, n16):
    scales = row.view(np.int8)
    for b in range(out.size // 256):
        o, e = b * 210, b * 256
        d = _fp16_at(row, o + 208, fp16)
        for half_ in range(2):
            for g in range(2):  # the two runs of 16 within each 32 share a scale
                s = o + 192 + 8 * half_ + g
                d1, d2 = d * F32(scales[s]), d * F32(scales[s + 2])
                d3, d4 = d * F32(scales[s + 4]), d * F32(scales[s + 6])
                for i in range(n16):
                    j = 16 * g + i
                    q1, q2, q3, q4 = _q6_quad(row, o, half_, j)
                    eo = e + 128 * half_ + j
                    out[eo] = F32(q1 - 32) * d1
                    out[eo + 32] = F32(q2 - 32) * d2
                    out[eo + 64] = F32(q3 - 32) * d3
                    out[eo + 96] = F32(q4 - 32) * d4


@njit(cache=True)
def dequantize_row(qtype, row, out, fp16, n16):
    if qtype == 0:
        dequantize_f32(row, out, fp16, n16)
    elif qtype == 1:
        dequantize_f16(row, out, fp16, n16)
    elif qtype == 30:
        dequantize_bf16(row, out, fp16, n16)
    elif qtype == 2:
        dequantize_q4_0(row, out, fp16, n16)
    elif qtype == 3:
        dequantize_q4_1(row, out, fp16, n16)
    elif qtype == 6:
        dequantize_q5_0(row, out, fp16, n16)
    elif qtype == 7:
        dequantize_q5_1(row, out, fp16, n16)
    elif qtype == 8:
        dequantize_q8_0(row, out, fp16, n16)
    elif qtype == 12:
        dequantize_q4_k(row, out, fp16, n16)
    elif qtype == 13:
        dequantize_q5_k(row, out, fp16, n16)
    elif qtype == 14:
        dequantize_q6_k(row, out, fp16, n16)


# ---- the kernels: in this module so that numba's cache, which checks only the defining file, is invalidated
# ---- by any change to the row functions they inline


@njit(fastmath=True, cache=True)
def _rows(qtype, w, x, xs, fp16, n16, out, lo, hi):
    """out[i, r] = w[r] . x[i] for rows lo..hi-1, each row's bytes read once for all the vectors. One loop per
    type: dispatching on the type inside the loop measured 20% slower."""
    n = x.shape[0]
    if qtype == 0:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = dot_f32(w[r], x[i], xs[i], fp16, n16)
    elif qtype == 1:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = dot_f16(w[r], x[i], xs[i], fp16, n16)
    elif qtype == 30:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = dot_bf16(w[r], x[i], xs[i], fp16, n16)
    elif qtype == 2:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q4_0(w[r], x[i], xs[i], fp16)
    elif qtype == 3:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q4_1(w[r], x[i], xs[i], fp16)
    elif qtype == 6:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q5_0(w[r], x[i], fp16)
    elif qtype == 7:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q5_1(w[r], x[i], xs[i], fp16)
    elif qtype == 8:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q8_0(w[r], x[i], fp16)
    elif qtype == 12:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q4_k(w[r], x[i], xs[i], fp16)
    elif qtype == 13:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q5_k(w[r], x[i], xs[i], fp16)
    elif qtype == 14:
        for r in range(lo, hi):
            for i in range(n):
                out[i, r] = simd.dot_q6_k(w[r], x[i], fp16)


# A run of rows, the unit a thread takes at a time: at least RUN_MIN_BYTES (a few hundred ns of work, so that
# taking it, one atomic add, costs little) and at most RUN_MAX_BYTES (a run left waiting on a busy core holds
# up little), aiming at RUNS_PER_THREAD runs per thread so that the last ones even out the threads' finish.
RUN_MIN_BYTES, RUN_MAX_BYTES, RUNS_PER_THREAD = 4096, 1 << 18, 8


@njit(cache=True)
def _run_rows(rows, row_bytes, workers):
    if workers == 1:
        return rows
    least, most = max(1, RUN_MIN_BYTES // row_bytes), max(1, RUN_MAX_BYTES // row_bytes)
    return min(max(rows // (workers * RUNS_PER_THREAD), least), most)


@njit(parallel=True, fastmath=True, cache=True)
def matvec_rows(qtype, w, x, xs, fp16, n16, out, workers):
    """out[i, r] = w[r] . x[i], on numba's threads: each takes the next run of rows (`simd.claim`) until none are
    left, so a thread that the OS holds back (another process on its core) leaves its share to the others."""
    rows = w.shape[0]
    run = _run_rows(rows, w.shape[1], workers)
    runs, taken = (rows + run - 1) // run, np.zeros(1, dtype=np.int64)
    for _ in prange(workers):
        c = simd.claim(taken)
        while c < runs:
            _rows(qtype, w, x, xs, fp16, n16, out, c * run, min(rows, c * run + run))
            c = simd.claim(taken)


@njit(fastmath=True, cache=True)
def _many_rows(qtype, w, x, xs, fp16, out, lo, hi):
    if qtype == 2:
        for r in range(lo, hi):
            simd.dot_many_q4_0(w[r], x, xs, fp16, out[r])
    elif qtype == 3:
        for r in range(lo, hi):
            simd.dot_many_q4_1(w[r], x, xs, fp16, out[r])
    elif qtype == 7:
        for r in range(lo, hi):
            simd.dot_many_q5_1(w[r], x, xs, fp16, out[r])
    elif qtype == 13:
        for r in range(lo, hi):
            simd.dot_many_q5_k(w[r], x, xs, fp16, out[r])


@njit(parallel=True, fastmath=True, cache=True)
def matvec_many_rows(qtype, w, x, xs, fp16, n16, out, workers):
    """out[r, i] = w[r] . x[i] for up to simd.MANY vectors, each row's blocks decoded once for all of them (Q4_0,
    Q4_1, Q5_1, Q5_K: MANY_TYPES; matvec_fixed takes the default model's types, matvec_rows the float ones); runs
    of rows taken as in matvec_rows."""
    rows = w.shape[0]
    run = _run_rows(rows, w.shape[1] * x.shape[0], workers)
    runs, taken = (rows + run - 1) // run, np.zeros(1, dtype=np.int64)
    for _ in prange(workers):
        c = simd.claim(taken)
        while c < runs:
            _many_rows(qtype, w, x, xs, fp16, out, c * run, min(rows, c * run + run))
            c = simd.claim(taken)


# The quantized types matvec_many_rows takes.
MANY_TYPES = (2, 3, 7, 13)
# The types matvec_fixed takes (Q5_0, Q8_0, Q4_K, Q6_K), in batches of simd.FIXED_WIDTHS vectors.
FIXED_TYPES = (6, 8, 12, 14)


@njit(fastmath=True, cache=True)
def _fixed_rows(qtype, w, x, fp16, out, lo, hi):
    n = x.shape[0]
    if qtype == 8 and n == 8:
        for r in range(lo, hi):
            simd.dot8_q8_0(w[r], x, fp16, out, r)
    elif qtype == 8 and n == 4:
        for r in range(lo, hi):
            simd.dot4_q8_0(w[r], x, fp16, out, r)
    elif qtype == 8 and n == 2:
        for r in range(lo, hi):
            simd.dot2_q8_0(w[r], x, fp16, out, r)
    elif qtype == 6 and n == 8:
        for r in range(lo, hi):
            simd.dot8_q5_0(w[r], x, fp16, out, r)
    elif qtype == 6 and n == 4:
        for r in range(lo, hi):
            simd.dot4_q5_0(w[r], x, fp16, out, r)
    elif qtype == 6 and n == 2:
        for r in range(lo, hi):
            simd.dot2_q5_0(w[r], x, fp16, out, r)
    elif qtype == 12 and n == 8:
        for r in range(lo, hi):
            simd.dot8_q4_k(w[r], x, fp16, out, r)
    elif qtype == 12 and n == 4:
        for r in range(lo, hi):
            simd.dot4_q4_k(w[r], x, fp16, out, r)
    elif qtype == 12 and n == 2:
        for r in range(lo, hi):
            simd.dot2_q4_k(w[r], x, fp16, out, r)
    elif qtype == 14 and n == 8:
        for r in range(lo, hi):
            simd.dot8_q6_k(w[r], x, fp16, out, r)
    elif qtype == 14 and n == 4:
        for r in range(lo, hi):
            simd.dot4_q6_k(w[r], x, fp16, out, r)
    elif qtype == 14 and n == 2:
        for r in range(lo, hi):
            simd.dot2_q6_k(w[r], x, fp16, out, r)


@njit(parallel=True, fastmath=True, cache=True)
def matvec_fixed(qtype, w, x, fp16, workers):
    """x @ w.T for a batch of exactly 2, 4 or 8 vectors x of a FIXED_TYPES matrix -> (n, rows): each block decoded
    once, each vector's sum in a register (simd._fixed_batch_dot); runs of rows taken as in matvec_rows."""
    rows, n = w.shape[0], x.shape[0]
    out = np.empty((n, rows), dtype=F32)
    run = _run_rows(rows, w.shape[1] * n, workers)
    runs, taken = (rows + run - 1) // run, np.zeros(1, dtype=np.int64)
    for _ in prange(workers):
        c = simd.claim(taken)
        while c < runs:
            _fixed_rows(qtype, w, x, fp16, out, c * run, min(rows, c * run + run))
            c = simd.claim(taken)
    return out


# Types whose dot products take `xs`, the sums of x over runs of 16; for the others it is not computed.
_TAKES_SUMS = (2, 3, 7, 12, 13)  # Q4_0, Q4_1, Q5_1, Q4_K, Q5_K


@njit(cache=True)
def matvec(qtype, w, x, fp16, n16, workers):
    """x @ w.T for a few vectors x (n, cols) float32 C-contiguous, w given as its rows of blocks -> (n, rows)."""
    xs = _sums(qtype, x, n16)
    out = np.empty((x.shape[0], w.shape[0]), dtype=F32)
    matvec_rows(qtype, w, x, xs, fp16, n16, out, workers)
    return out


@njit(cache=True)
def matvec_many(qtype, w, x, fp16, n16, workers):
    """x @ w.T for 2..simd.MANY vectors x (n, cols) of a MANY_TYPES matrix -> (n, rows); apart from `matvec`: the
    one-token layer (`fused`), which calls that, must not compile this in (it crashed there)."""
    xs = _sums(qtype, x, n16)
    out = np.empty((w.shape[0], x.shape[0]), dtype=F32)
    matvec_many_rows(qtype, w, x, xs, fp16, n16, out, workers)
    return out.T.copy()


@njit(cache=True)
def _sums(qtype, x, n16):
    """The sums of x over runs of 16 for the types that take them; a placeholder for the others."""
    n, cols = x.shape
    if qtype in _TAKES_SUMS:
        xs = np.empty((n, cols // n16), dtype=F32)
        for i in range(n):
            for b in range(cols // n16):
                s = F32(0)
                for j in range(n16):
                    s += x[i, b * n16 + j]
                xs[i, b] = s
    else:
        xs = np.empty((n, 1), dtype=F32)
    return xs


@njit(nogil=True, cache=True)
def dequantize_rows(qtype, w, fp16, n16, out):
    for r in range(w.shape[0]):
        dequantize_row(qtype, w[r], out[r], fp16, n16)
