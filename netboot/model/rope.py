"""Rotary position embedding: the rotation frequencies of a layer."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from netboot.config import ModelConfig


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


def layer_rope(config: ModelConfig, layer: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A layer's rotation frequencies, and the positions scaled as its RoPE takes them: sliding-window layers
    (Gemma 3) have their own base and no scaling."""
    c = config
    sliding = c.is_sliding(layer)
    base = c.rope_base_local if sliding else c.rope_base
    inv_freq = rope_frequencies(c.head_dim, base, None if sliding else c.rope_freq_factors)
    return inv_freq, positions.astype(np.float64) / (1.0 if sliding else c.rope_scale)
