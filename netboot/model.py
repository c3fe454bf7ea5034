"""The transformer: Llama family and Gemma 3, as one forward pass read top to bottom.

A forward pass is `run_layers(h, start, stop, cache, pos)`: layers [start, stop) on a hidden state, with
that range's KV cache. Embedding and output head are separate steps, so a range of layers can run on
another machine, or with weights streamed in one layer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from netboot import decode, ops
from netboot.config import ModelConfig
from netboot.tensor import QTensor, matmul, vector
from netboot.weights import Weights


class KVCache:
    """Keys and values of layers [start, stop) for one sequence; grows as positions are added."""

    def __init__(self, config: ModelConfig, start: int = 0, stop: int | None = None, capacity: int = 256):
        self.config = config
        self.start = start
        self.stop = config.n_layers if stop is None else stop
        self.length = 0  # positions filled
        shape = (config.n_kv_heads, capacity, config.head_dim)
        self.k = [np.zeros(shape, np.float32) for _ in range(self.start, self.stop)]
        self.v = [np.zeros(shape, np.float32) for _ in range(self.start, self.stop)]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[1] if self.k else 0

    def store(self, layer: int, pos: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write k, v (n_kv_heads, T, head_dim) at positions pos.., return the layer's keys/values [0, pos+T)."""
        i = layer - self.start
        end = pos + k.shape[1]
        if end > self.capacity:
            self._grow(end)
        self.k[i][:, pos:end] = k
        self.v[i][:, pos:end] = v
        return self.k[i][:, :end], self.v[i][:, :end]

    def buffers(self, layer: int, needed: int) -> tuple[np.ndarray, np.ndarray]:
        """The layer's whole key and value buffers (n_kv_heads, capacity, head_dim), grown to hold `needed`
        positions."""
        if needed > self.capacity:
            self._grow(needed)
        return self.k[layer - self.start], self.v[layer - self.start]

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.capacity)
        for cache in (self.k, self.v):
            for i, old in enumerate(cache):
                new = np.zeros((old.shape[0], capacity, old.shape[2]), np.float32)
                new[:, : old.shape[1]] = old
                cache[i] = new

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)


@dataclass
class Model:
    config: ModelConfig
    weights: Weights
    # One-token steps run each layer in one compiled call (netboot.decode); off, they take the prompt path. Off under
    # --max-memory: loading that call's code holds 8 MB, and a streamed token's reads take far longer than the
    # 1.4 ms per token it saves.
    compiled_decode: bool = True
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # norm weights as float32
    _layer_shape: decode.LayerShape = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._layer_shape = decode.LayerShape.of(self.config)

    def new_cache(self, start: int = 0, stop: int | None = None) -> KVCache:
        return KVCache(self.config, start, stop)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        h = self.weights.embedding().take_rows(np.asarray(tokens, dtype=np.int64))
        return h * np.float32(self.config.embed_scale) if self.config.embed_scale != 1.0 else h

    def run_layers(self, h: np.ndarray, start: int, stop: int, cache: KVCache, pos: int) -> np.ndarray:
        """Layers [start, stop) on hidden states h (T, dim) for positions pos..pos+T-1."""
        positions = np.arange(pos, pos + h.shape[0])
        for layer in range(start, stop):
            h = self._layer(layer, self.weights.layer(layer), h, cache, positions)
        if stop == cache.stop:
            cache.length = pos + h.shape[0]
        return h

    def logits(self, h: np.ndarray) -> np.ndarray:
        """Final norm and output projection of hidden states (T, dim) -> (T, vocab)."""
        h = ops.rms_norm(h, self._vector(self.weights.output_norm()), self.config.norm_eps)
        return matmul(h, self.weights.output())

    def forward(self, tokens: list[int] | np.ndarray, cache: KVCache, pos: int) -> np.ndarray:
        """Logits of the last position after feeding `tokens` at positions pos.. through every layer."""
        h = self.run_layers(self.embed(tokens), 0, self.config.n_layers, cache, pos)
        return self.logits(h[-1:])[0]

    def _vector(self, t: QTensor) -> np.ndarray:
        v = self._vectors.get(t.name)
        if v is None:
            v = self._vectors[t.name] = vector(t)
        return v

    def _norm(self, x: np.ndarray, t: QTensor) -> np.ndarray:
        return ops.rms_norm(np.ascontiguousarray(x), self._vector(t), self.config.norm_eps)

    def _layer(self, layer: int, w: dict[str, QTensor], x: np.ndarray, cache: KVCache, positions: np.ndarray):
        if x.shape[0] == 1 and self.compiled_decode:  # the same steps in one compiled call (netboot.decode)
            return self._decode_layer(layer, w, x, cache, int(positions[0]))
        c = self.config
        out = self._attention(layer, w, self._norm(x, w["attn_norm"]), cache, positions)
        if c.post_norms:
            out = self._norm(out, w["post_attention_norm"])
        x = x + out
        out = self._feed_forward(w, self._norm(x, w["ffn_norm"]))
        if c.post_norms:
            out = self._norm(out, w["post_ffw_norm"])
        return x + out

    def _attention(self, layer: int, w: dict[str, QTensor], h: np.ndarray, cache: KVCache, positions: np.ndarray):
        c = self.config
        t = h.shape[0]
        q = matmul(h, w["attn_q"]).reshape(t, c.n_heads, c.head_dim)
        k = matmul(h, w["attn_k"]).reshape(t, c.n_kv_heads, c.head_dim)
        v = matmul(h, w["attn_v"]).reshape(t, c.n_kv_heads, c.head_dim)
        if c.qk_norm:
            q = self._norm(q, w["attn_q_norm"])
            k = self._norm(k, w["attn_k_norm"])
        inv_freq, at = self._rope(layer, positions)
        halves = c.rope_style == "halves"
        q, k = ops.rope(q, at, inv_freq, halves), ops.rope(k, at, inv_freq, halves)
        keys, values = cache.store(layer, int(positions[0]), k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        sliding = c.is_sliding(layer)

        # Grouped-query attention: query heads are grouped by the key/value head they share.
        group = c.n_heads // c.n_kv_heads
        q = q.transpose(1, 0, 2).reshape(c.n_kv_heads, group, t, c.head_dim)
        scores = np.matmul(q, keys[:, None].transpose(0, 1, 3, 2)) * np.float32(c.scale)  # (kv, group, t, s)
        key_pos = np.arange(keys.shape[1])
        masked = key_pos[None, :] > positions[:, None]
        if sliding:
            masked |= positions[:, None] - key_pos[None, :] >= c.sliding_window
        scores = np.where(masked, np.float32(-np.inf), scores)
        probs = softmax(scores)
        out = np.matmul(probs, values[:, None])  # (kv, group, t, head_dim)
        out = out.reshape(c.n_heads, t, c.head_dim).transpose(1, 0, 2).reshape(t, c.n_heads * c.head_dim)
        return matmul(out, w["attn_output"])

    def _rope(self, layer: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The layer's rotation frequencies, and the positions scaled as its RoPE takes them."""
        c = self.config
        sliding = c.is_sliding(layer)
        base = c.rope_base_local if sliding else c.rope_base
        inv_freq = rope_frequencies(c.head_dim, base, None if sliding else c.rope_freq_factors)
        return inv_freq, positions.astype(np.float64) / (1.0 if sliding else c.rope_scale)

    def _decode_layer(self, layer: int, w: dict[str, QTensor], x: np.ndarray, cache: KVCache, pos: int):
        c = self.config
        keys, values = cache.buffers(layer, pos + 1)
        first = max(0, pos - c.sliding_window + 1) if c.is_sliding(layer) else 0
        inv_freq, at = self._rope(layer, np.array([pos]))
        products = [(w[p].data, w[p].qtype) for p in decode.PRODUCTS]
        norms = [self._vector(w[p]) if p in w else decode.NO_NORM for p in decode.NORMS]
        return decode.run_layer(self._layer_shape, x, products, norms, keys, values, pos, first, float(at[0]), inv_freq)

    def _feed_forward(self, w: dict[str, QTensor], h: np.ndarray) -> np.ndarray:
        gate = matmul(h, w["ffn_gate"])
        up = matmul(h, w["ffn_up"])
        glu = ops.gelu_tanh_mul if self.config.activation == "gelu_tanh" else ops.silu_mul
        return matmul(glu(gate, up), w["ffn_down"])


@lru_cache(maxsize=16)
def _rope_frequencies(head_dim: int, base: float, factors: tuple[float, ...] | None) -> np.ndarray:
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if factors is not None:
        inv_freq = inv_freq / np.asarray(factors, dtype=np.float64)
    inv_freq.flags.writeable = False
    return inv_freq


def rope_frequencies(head_dim: int, base: float, factors: Sequence[float] | None = None) -> np.ndarray:
    """Rotation frequencies (head_dim / 2) float64; `factors` divide them (Llama 3.1's scaling, as llama.cpp's
    rope_freqs)."""
    return _rope_frequencies(head_dim, base, None if factors is None else tuple(factors))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
