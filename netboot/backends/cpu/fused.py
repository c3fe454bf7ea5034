"""One layer of a decoding step (one new position) as one compiled call.

In decoding, a layer's seven products take about half a millisecond together, and the Python around them (a dozen
calls, each with numba's argument checks and numpy's temporaries) cost another 80 us per layer: 1.4 ms of a 16 ms
token on the default model, measured. Here the layer runs in one numba call. It performs the steps of
`netboot.model.layer`, in the same order; those steps still run prompts, where the products dominate. It is the CPU
backend's fused capability (`CpuBackend.fused_layer`); a test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from netboot.backends.cpu import blocks, jit, kernels, ops  # noqa: F401 - jit first: it sets the kernel cache directory
from netboot.config import ModelConfig

F32 = np.float32
PRODUCTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm")
NO_NORM = np.zeros(0, dtype=F32)  # where a model has no such norm (Llama's post norms): never read


@dataclass(frozen=True)
class LayerShape:
    """What the compiled layer needs to know of the model, as plain tuples numba takes cheaply."""

    sizes: tuple[int, int, int]  # n_heads, n_kv_heads, head_dim
    flags: tuple[bool, bool, bool, bool]  # qk_norm, post_norms, GeGLU (else SwiGLU), RoPE on halves
    eps: float
    scale: float

    @classmethod
    def of(cls, c: ModelConfig) -> LayerShape:
        return cls((c.n_heads, c.n_kv_heads, c.head_dim),
                   (c.qk_norm, c.post_norms, c.activation == "gelu_tanh", c.rope_style == "halves"),
                   float(c.norm_eps), float(c.scale))


def run_layer(shape: LayerShape, h: np.ndarray, products: list, norms: list[np.ndarray], keys: np.ndarray,
              values: np.ndarray, pos: int, first: int, at: float, inv_freq: np.ndarray) -> np.ndarray:
    """h (1, dim) at position `pos` -> the layer's output (1, dim). `products`: the PRODUCTS' (block bytes, type);
    `norms`: the NORMS' float32 weights (NO_NORM where absent); keys/values: the layer's whole KV buffers, which
    get this position's key and value; attention over positions first..pos; RoPE angle multiplier `at` and
    frequencies `inv_freq` (read-only float64)."""
    if not 0 <= first <= pos < keys.shape[1]:  # compiled code does not check its indices
        raise ValueError(f"position {pos} (attending from {first}) outside a KV buffer of {keys.shape[1]}")
    weights = tuple(kernels.readonly(w) for w, _ in products)
    qtypes = tuple(int(t) for _, t in products)
    h = kernels.writable(np.ascontiguousarray(h, dtype=F32))
    return _layer(h, weights, qtypes, tuple(norms), keys, values, pos, first, at, kernels.readonly(inv_freq),
                  shape.sizes, shape.flags, shape.eps, F32(shape.scale), kernels.FP16, kernels.N16,
                  kernels.thread_count())


@njit(cache=True)
def _layer(h, weights, qtypes, norms, keys, values, pos, first, at, inv_freq, sizes, flags, eps, scale, fp16, n16,
           workers):
    n_heads, n_kv_heads, head_dim = sizes
    qk_norm, post_norms, gelu, halves = flags

    def product(i, x):
        return blocks.matvec(qtypes[i], weights[i], x, fp16, n16, workers)

    x = ops.rms_norm(h, norms[0], eps)
    q = product(0, x).reshape(1, n_heads, head_dim)
    k = product(1, x).reshape(1, n_kv_heads, head_dim)
    v = product(2, x).reshape(n_kv_heads, head_dim)
    if qk_norm:
        q = ops.rms_norm(q, norms[1], eps)
        k = ops.rms_norm(k, norms[2], eps)
    angle = np.full(1, at)
    q = ops.rope(q, angle, inv_freq, halves)
    k = ops.rope(k, angle, inv_freq, halves)
    keys[:, pos] = k[0]
    values[:, pos] = v
    out = product(3, ops.attend_one(q[0], keys, values, first, pos + 1, scale).reshape(1, -1))
    if post_norms:
        out = ops.rms_norm(out, norms[3], eps)
    h = h + out
    x = ops.rms_norm(h, norms[4], eps)
    gate, up = product(4, x), product(5, x)
    out = product(6, ops.gelu_tanh_mul(gate, up) if gelu else ops.silu_mul(gate, up))
    if post_norms:
        out = ops.rms_norm(out, norms[5], eps)
    return h + out
