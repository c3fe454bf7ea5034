"""The transformer's small operations, compiled: RMS norm, rotary embedding, the gated activations and attention of
one new position over the KV cache.

Each is one numba call over whole arrays (no Python loop over heads or positions): in decoding, where a layer's
products take well under a millisecond, numpy's dozen temporaries per operation cost as much as the products.
Sums are accumulated in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from netboot.backends.cpu import jit  # noqa: F401 - sets the kernel cache directory before anything is compiled

F32 = np.float32


@njit(fastmath=True, cache=True)
def rms_norm(x, weight, eps):
    """x (..., d) / sqrt(mean(x^2) + eps) * weight, for contiguous x."""
    d = x.shape[-1]
    rows = x.reshape(-1, d)
    out = np.empty_like(rows)
    for r in range(rows.shape[0]):
        ss = 0.0
        for i in range(d):
            ss += np.float64(rows[r, i]) * rows[r, i]
        inv = F32(1.0 / math.sqrt(ss / d + eps))
        for i in range(d):
            out[r, i] = rows[r, i] * inv * weight[i]
    return out.reshape(x.shape)


@njit(fastmath=True, cache=True)
def rope(x, positions, inv_freq, halves):
    """Rotary position embedding of x (T, heads, head_dim) at `positions` (T,) float64, with rotation frequencies
    `inv_freq` (head_dim / 2) float64. Pairs are (i, i + head_dim / 2) when `halves` (NeoX / Gemma), else
    (2i, 2i + 1) (original Llama)."""
    t_len, heads, d = x.shape
    half = d // 2
    out = np.empty_like(x)
    for t in range(t_len):
        for k in range(half):
            angle = positions[t] * inv_freq[k]
            c, s = F32(math.cos(angle)), F32(math.sin(angle))
            a_i, b_i = (k, k + half) if halves else (2 * k, 2 * k + 1)
            for h in range(heads):
                a, b = x[t, h, a_i], x[t, h, b_i]
                out[t, h, a_i] = a * c - b * s
                out[t, h, b_i] = a * s + b * c
    return out


# e^x as ln 2 * n + r, |r| <= ln 2 / 2: 2^n from the exponent bits, e^r from its Taylor series to r^7 (truncation
# < 6e-9 relative). ln 2 in two parts (Cody and Waite) keeps r accurate for large n. Measured: within 3e-7 of e^x
# relative (about 2 float32 steps; tests/backends/test_kernels.py).
_LN2_HI, _LN2_LO = F32(0.693145751953125), F32(1.428606765330187e-06)
_INV_LN2 = F32(1.0 / math.log(2.0))
_TAYLOR = tuple(F32(1.0 / math.factorial(k)) for k in range(8))


@njit(fastmath=True, cache=True, inline="always")
def exp32(x):
    """e^x in float32 that LLVM vectorizes (numba's math.exp calls libm once per element: 10x slower in a loop).
    Inputs are clamped to [-87, 88], where float32's e^x is a normal number."""
    x = min(max(x, F32(-87.0)), F32(88.0))
    n = np.floor(x * _INV_LN2 + F32(0.5))
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _TAYLOR[7]
    for k in range(6, -1, -1):
        p = p * r + _TAYLOR[k]
    return p * np.int32((np.int32(n) + 127) << 23).view(F32)


_GELU_K = F32(2.0 * math.sqrt(2.0 / math.pi))


# error_model="numpy": a division by zero gives inf instead of raising, which leaves LLVM free to vectorize.
@njit(fastmath=True, error_model="numpy", cache=True)
def gelu_tanh_mul(gate, up):
    """gelu(gate) * up, GELU in its tanh approximation (Gemma's GeGLU), for contiguous (T, n) arrays. Written as
    0.5 * g * (1 + tanh(y)) = g / (1 + e^(-2y)): one exp, and no cancellation where tanh(y) is near -1."""
    out = np.empty_like(gate)
    g, u, o = gate.reshape(-1), up.reshape(-1), out.reshape(-1)
    for i in range(g.size):
        y = _GELU_K * (g[i] + F32(0.044715) * g[i] * g[i] * g[i])
        o[i] = g[i] * u[i] / (F32(1) + exp32(-y))
    return out


@njit(fastmath=True, error_model="numpy", cache=True)
def silu_mul(gate, up):
    """silu(gate) * up (Llama's SwiGLU), for contiguous (T, n) arrays."""
    out = np.empty_like(gate)
    g, u, o = gate.reshape(-1), up.reshape(-1), out.reshape(-1)
    for i in range(g.size):
        o[i] = g[i] * u[i] / (F32(1) + exp32(-g[i]))
    return out


@njit(fastmath=True, cache=True)
def attend_one(q, keys, values, first, n, scale):
    """Attention of one position's queries q (heads, head_dim) over the KV cache's keys/values (kv_heads, capacity,
    head_dim), positions first..n-1 (first > 0 for a sliding window). Query heads are grouped by the key/value head
    they share, and each group goes over its cache once. Returns (heads * head_dim,).

    The cache's whole buffers and not views of the filled part: a view is not contiguous when kv_heads > 1, and
    numba's code for non-contiguous arrays measured 10x slower here."""
    heads, d = q.shape
    kv_heads = keys.shape[0]
    group = heads // kv_heads
    out = np.zeros((heads, d), dtype=np.float32)
    scores = np.empty((group, n), dtype=np.float32)
    for g in range(kv_heads):
        for s in range(first, n):
            for j in range(group):
                acc = F32(0)
                for i in range(d):
                    acc += q[g * group + j, i] * keys[g, s, i]
                scores[j, s] = acc * scale
        for j in range(group):
            best = np.max(scores[j, first:n])
            total = 0.0
            for s in range(first, n):
                e = exp32(scores[j, s] - best)
                scores[j, s] = e
                total += e
            inv = F32(1.0 / total)
            for s in range(first, n):
                scores[j, s] *= inv
        for s in range(first, n):
            for j in range(group):
                p = scores[j, s]
                for i in range(d):
                    out[g * group + j, i] += p * values[g, s, i]
    return out.reshape(heads * d)
