"""Keys and values of a range of layers for one sequence."""

from __future__ import annotations

import numpy as np

from netboot.config import ModelConfig


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

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)

    @staticmethod
    def bytes_per_position(config: ModelConfig, start: int = 0, stop: int | None = None) -> int:
        layers = (config.n_layers if stop is None else stop) - start
        return 2 * layers * config.n_kv_heads * config.head_dim * 4

    def reserve(self, positions: int) -> None:
        """Hold exactly `positions` (when more than now): an engine that budgets its caches sizes them itself."""
        if positions > self.capacity:
            self._grow(positions, exact=True)

    def _grow(self, needed: int, exact: bool = False) -> None:
        capacity = needed if exact else max(needed, 2 * self.capacity)
        for cache in (self.k, self.v):
            for i, old in enumerate(cache):
                new = np.zeros((old.shape[0], capacity, old.shape[2]), np.float32)
                new[:, : old.shape[1]] = old
                cache[i] = new

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)
