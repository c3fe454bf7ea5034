"""The transformer: Llama family and Gemma 3.

A forward pass is `run_layers(h, start, stop, cache, pos)`: layers [start, stop) on a hidden state, with
that range's KV cache. Embedding and output head are separate steps, so a range of layers can run on
another machine, or with weights streamed in one layer at a time. Where the weights are is the `Weights`
placement's business, how the operations run the `Backend`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netboot.backends.base import Backend, select
from netboot.config import ModelConfig
from netboot.model.kv_cache import KVCache
from netboot.model.layer import layer
from netboot.placement.base import Weights


@dataclass
class Model:
    config: ModelConfig
    weights: Weights
    backend: Backend = field(default_factory=select)

    def new_cache(self, start: int = 0, stop: int | None = None) -> KVCache:
        return KVCache(self.config, start, stop)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        h = self.backend.take_rows(self.weights.embedding(), np.asarray(tokens, dtype=np.int64))
        return h * np.float32(self.config.embed_scale) if self.config.embed_scale != 1.0 else h

    def run_layers(self, h: np.ndarray, start: int, stop: int, cache: KVCache, pos: int) -> np.ndarray:
        """Layers [start, stop) on hidden states h (T, dim) for positions pos..pos+T-1."""
        positions = np.arange(pos, pos + h.shape[0])
        for i in range(start, stop):
            h = layer(self.backend, self.config, i, self.weights.layer(i), h, cache, positions)
        if stop == cache.stop:
            cache.length = pos + h.shape[0]
        return h

    def logits(self, h: np.ndarray) -> np.ndarray:
        """Final norm and output projection of hidden states (T, dim) -> (T, vocab)."""
        h = self.backend.norm(h, self.weights.output_norm(), self.config.norm_eps)
        return self.backend.linear(h, self.weights.output())

    def forward(self, tokens: list[int] | np.ndarray, cache: KVCache, pos: int) -> np.ndarray:
        """Logits of the last position after feeding `tokens` at positions pos.. through every layer."""
        h = self.run_layers(self.embed(tokens), 0, self.config.n_layers, cache, pos)
        return self.logits(h[-1:])[0]
