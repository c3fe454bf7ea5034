"""The transformer: Llama family and Gemma 3.

A forward pass is `run_layers(h, start, stop, cache, pos)`: layers [start, stop) on a hidden state, with
that range's KV cache; `run_batch` does the same for several sequences at once, each a `Span` of the rows with its
own cache. Embedding and output head are separate steps, so a range of layers can run on
another machine, or with weights streamed in one layer at a time. Where the weights are is the `Weights`
placement's business, how the operations run the `Backend`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netboot.backends.base import Backend, select
from netboot.config import ModelConfig
from netboot.model.kv_cache import KVCache
from netboot.model.layer import Span, layer
from netboot.placement.base import Weights


@dataclass
class Model:
    config: ModelConfig
    weights: Weights
    backend: Backend = field(default_factory=select)

    def new_cache(self, start: int = 0, stop: int | None = None, capacity: int = 256) -> KVCache:
        return KVCache(self.config, start, stop, capacity)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        h = self.backend.take_rows(self.weights.embedding(), np.asarray(tokens, dtype=np.int64))
        return h * np.float32(self.config.embed_scale) if self.config.embed_scale != 1.0 else h

    def run_layers(self, h: np.ndarray, start: int, stop: int, cache: KVCache, pos: int) -> np.ndarray:
        """Layers [start, stop) on hidden states h (T, dim) for positions pos..pos+T-1."""
        return self.run_batch(h, start, stop, [Span(0, h.shape[0], cache, pos)])

    def run_batch(self, h: np.ndarray, start: int, stop: int, spans: list[Span]) -> np.ndarray:
        """Layers [start, stop) on the hidden states h (T, dim) of several sequences: each of `spans` names its
        rows, cache and first position. Every weight is read once for the whole batch."""
        for i in range(start, stop):
            h = layer(self.backend, self.config, i, self.weights.layer(i), h, spans)
        for s in spans:
            if stop == s.cache.stop:
                s.cache.length = s.pos + s.hi - s.lo
        return h

    def logits(self, h: np.ndarray) -> np.ndarray:
        """Final norm and output projection of hidden states (T, dim) -> (T, vocab)."""
        h = self.backend.norm(h, self.weights.output_norm(), self.config.norm_eps)
        return self.backend.linear(h, self.weights.output())

    def forward(self, tokens: list[int] | np.ndarray, cache: KVCache, pos: int) -> np.ndarray:
        """Logits of the last position after feeding `tokens` at positions pos.. through every layer."""
        with self.backend.step(len(tokens)):
            h = self.run_layers(self.embed(tokens), 0, self.config.n_layers, cache, pos)
            return self.logits(h[-1:])[0]

    def forward_batch(self, runs: list[tuple[list[int], KVCache, int]]) -> np.ndarray:
        """Logits (len(runs), vocab) of the last position of each run (tokens, cache, pos), all fed through every
        layer in one pass."""
        spans, lo = [], 0
        for tokens, cache, pos in runs:
            spans.append(Span(lo, lo + len(tokens), cache, pos))
            lo += len(tokens)
        ids = np.concatenate([np.asarray(t, dtype=np.int64) for t, _, _ in runs])
        with self.backend.step(len(ids)):
            h = self.run_batch(self.embed(ids), 0, self.config.n_layers, spans)
            return self.logits(h[[s.hi - 1 for s in spans]])
