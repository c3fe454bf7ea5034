"""The transformer's small operations: RMS norm, rotary embedding and attention of one new position over the KV
cache compiled, the activations in numpy.

Each is one numba call over whole arrays (no Python loop over heads or positions): in decoding, where a layer's
products take well under a millisecond, numpy's dozen temporaries per operation cost as much as the products.
Sums are accumulated in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from netboot import jit  # noqa: F401 - sets the kernel cache directory before anything is compiled

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


# The activations are numpy, in place on one temporary: numpy's float32 tanh and exp are vectorized, while numba
# calls libm once per element (measured 3x slower at one position, 4x on a 100-token prompt).
_GELU_K = F32(math.sqrt(2.0 / math.pi))


def gelu_tanh_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gelu(gate) * up, GELU in its tanh approximation (Gemma's GeGLU)."""
    t = gate * gate
    t *= F32(0.044715)
    t += F32(1)
    t *= gate
    t *= _GELU_K
    np.tanh(t, out=t)
    t += F32(1)
    t *= gate
    t *= F32(0.5)
    t *= up
    return t


def silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up (Llama's SwiGLU)."""
    t = np.negative(gate)
    np.exp(t, out=t)
    t += F32(1)
    np.divide(gate, t, out=t)
    t *= up
    return t


@njit(fastmath=True, cache=True)
def attend_one(q, keys, values, first, scale):
    """Attention of one position's queries q (heads, head_dim) over cached keys/values (kv_heads, S, head_dim),
    positions first..S-1 (first > 0 for a sliding window). Query heads are grouped by the key/value head they share.
    Returns (heads * head_dim,)."""
    heads, d = q.shape
    group = heads // keys.shape[0]
    n = keys.shape[1]
    out = np.zeros((heads, d), dtype=np.float32)
    scores = np.empty(n, dtype=np.float32)
    for h in range(heads):
        g = h // group
        best = -np.inf
        for s in range(first, n):
            acc = F32(0)
            for i in range(d):
                acc += q[h, i] * keys[g, s, i]
            scores[s] = acc * scale
            best = max(best, scores[s])
        total = 0.0
        for s in range(first, n):
            scores[s] = math.exp(scores[s] - best)
            total += scores[s]
        inv = F32(1.0 / total)
        for s in range(first, n):
            p = scores[s] * inv
            for i in range(d):
                out[h, i] += p * values[g, s, i]
    return out.reshape(heads * d)
