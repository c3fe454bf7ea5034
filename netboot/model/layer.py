"""One transformer layer, written once against a `Backend`, read top to bottom: attention with its norms, then the
gated feed-forward block, each added to the residual stream (Gemma 3 normalizes each block's output too).

The hidden states may hold several sequences at once (a batch): each is a `Span` of rows with its own KV cache and
positions. The products run once on all rows (a weight's bytes are read once for the whole batch); only attention
runs per span, over that sequence's own cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from netboot.backends.base import Backend
from netboot.config import ModelConfig
from netboot.model.kv_cache import KVCache
from netboot.model.rope import layer_rope
from netboot.tensors.qtensor import QTensor


@dataclass(frozen=True)
class Span:
    """Rows [lo, hi) of a batch's hidden states: one sequence's tokens at positions pos.., with its KV cache."""

    lo: int
    hi: int
    cache: KVCache
    pos: int

    def positions(self) -> np.ndarray:
        return np.arange(self.pos, self.pos + self.hi - self.lo)


def layer(b: Backend, c: ModelConfig, i: int, w: Mapping[str, QTensor], x: np.ndarray,
          spans: Sequence[Span]) -> np.ndarray:
    """Layer i on hidden states x (T, dim), made of `spans`; their keys and values go into their caches."""
    if len(spans) == 1 and x.shape[0] == 1 and b.fused_decode:
        return fused_step(b, c, i, w, x, spans[0].cache, spans[0].pos)
    out = attention(b, c, i, w, b.norm(x, w["attn_norm"], c.norm_eps), spans)
    if c.post_norms:
        out = b.norm(out, w["post_attention_norm"], c.norm_eps)
    x = x + out
    out = feed_forward(b, c, w, b.norm(x, w["ffn_norm"], c.norm_eps))
    if c.post_norms:
        out = b.norm(out, w["post_ffw_norm"], c.norm_eps)
    return x + out


def attention(b: Backend, c: ModelConfig, i: int, w: Mapping[str, QTensor], h: np.ndarray,
              spans: Sequence[Span]) -> np.ndarray:
    t = h.shape[0]
    q = b.linear(h, w["attn_q"]).reshape(t, c.n_heads, c.head_dim)
    k = b.linear(h, w["attn_k"]).reshape(t, c.n_kv_heads, c.head_dim)
    v = b.linear(h, w["attn_v"]).reshape(t, c.n_kv_heads, c.head_dim)
    if c.qk_norm:
        q, k = b.norm(q, w["attn_q_norm"], c.norm_eps), b.norm(k, w["attn_k_norm"], c.norm_eps)
    positions = spans[0].positions() if len(spans) == 1 else np.concatenate([s.positions() for s in spans])
    inv_freq, at = layer_rope(c, i, positions)
    halves = c.rope_style == "halves"
    q, k = b.rope(q, at, inv_freq, halves), b.rope(k, at, inv_freq, halves)
    window = c.sliding_window if c.is_sliding(i) else None
    mixed = np.empty((t, c.n_heads * c.head_dim), dtype=np.float32)
    for s in spans:
        rows = slice(s.lo, s.hi)
        s.cache.store(i, s.pos, k[rows].transpose(1, 0, 2), v[rows].transpose(1, 0, 2))
        # The whole buffers (contiguous; positions past the last are masked as the future): a one-token query
        # then goes to a compiled loop over them.
        keys, values = s.cache.buffers(i, s.hi - s.lo + s.pos)
        mixed[rows] = b.attend(q[rows], keys, values, positions[rows], window, c.scale)
    return b.linear(mixed, w["attn_output"])


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
