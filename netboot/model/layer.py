"""One transformer layer, written once against a `Backend`, read top to bottom: attention with its norms, then the
gated feed-forward block, each added to the residual stream (Gemma 3 normalizes each block's output too)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from netboot.backends.base import Backend
from netboot.config import ModelConfig
from netboot.model.kv_cache import KVCache
from netboot.model.rope import layer_rope
from netboot.tensors.qtensor import QTensor


def layer(b: Backend, c: ModelConfig, i: int, w: Mapping[str, QTensor], x: np.ndarray, cache: KVCache,
          positions: np.ndarray) -> np.ndarray:
    """Layer i on hidden states x (T, dim) at `positions`; its keys and values go into `cache`."""
    if x.shape[0] == 1 and b.fused_decode:
        return fused_step(b, c, i, w, x, cache, int(positions[0]))
    out = attention(b, c, i, w, b.norm(x, w["attn_norm"], c.norm_eps), cache, positions)
    if c.post_norms:
        out = b.norm(out, w["post_attention_norm"], c.norm_eps)
    x = x + out
    out = feed_forward(b, c, w, b.norm(x, w["ffn_norm"], c.norm_eps))
    if c.post_norms:
        out = b.norm(out, w["post_ffw_norm"], c.norm_eps)
    return x + out


def attention(b: Backend, c: ModelConfig, i: int, w: Mapping[str, QTensor], h: np.ndarray, cache: KVCache,
              positions: np.ndarray) -> np.ndarray:
    t = h.shape[0]
    q = b.linear(h, w["attn_q"]).reshape(t, c.n_heads, c.head_dim)
    k = b.linear(h, w["attn_k"]).reshape(t, c.n_kv_heads, c.head_dim)
    v = b.linear(h, w["attn_v"]).reshape(t, c.n_kv_heads, c.head_dim)
    if c.qk_norm:
        q, k = b.norm(q, w["attn_q_norm"], c.norm_eps), b.norm(k, w["attn_k_norm"], c.norm_eps)
    inv_freq, at = layer_rope(c, i, positions)
    halves = c.rope_style == "halves"
    q, k = b.rope(q, at, inv_freq, halves), b.rope(k, at, inv_freq, halves)
    keys, values = cache.store(i, int(positions[0]), k.transpose(1, 0, 2), v.transpose(1, 0, 2))
    window = c.sliding_window if c.is_sliding(i) else None
    return b.linear(b.attend(q, keys, values, positions, window, c.scale), w["attn_output"])


def feed_forward(b: Backend, c: ModelConfig, w: Mapping[str, QTensor], h: np.ndarray) -> np.ndarray:
    gate, up = b.linear(h, w["ffn_gate"]), b.linear(h, w["ffn_up"])
    return b.linear(b.glu(gate, up, c.activation), w["ffn_down"])


def fused_step(b: Backend, c: ModelConfig, i: int, w: Mapping[str, QTensor], x: np.ndarray, cache: KVCache,
               pos: int) -> np.ndarray:
    """The same steps for one token as the backend's one call (`Backend.fused_layer`)."""
    keys, values = cache.buffers(i, pos + 1)
    first = max(0, pos - c.sliding_window + 1) if c.is_sliding(i) else 0
    inv_freq, at = layer_rope(c, i, np.array([pos]))
    return b.fused_layer(c, x, w, keys, values, pos, first, float(at[0]), inv_freq)
