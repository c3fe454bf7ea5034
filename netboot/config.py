"""The hyperparameters of a model, whatever file format they came from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PREFILL_BATCH = 256  # prompt tokens per forward pass: bounds the attention scores' memory


@dataclass
class ModelConfig:
    arch: str  # "llama" or "gemma3"
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    context_length: int = 2048
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    # "interleaved": rotate pairs (x[2i], x[2i+1]) as llama.cpp's Llama GGUFs and llama2.c do;
    # "halves": rotate (x[i], x[i + d/2]) as Hugging Face checkpoints and Gemma do.
    rope_style: str = "interleaved"
    # Gemma 3: sliding-window layers use their own RoPE base; None means no sliding window.
    sliding_window: int | None = None
    rope_base_local: float = 10000.0
    rope_scale: float = 1.0  # linear RoPE scaling of the global (non-sliding) layers: positions divided by it
    # Per-frequency RoPE divisors of the global (non-sliding) layers, head_dim / 2 of them (Llama 3.1's "llama3"
    # scaling: GGUF's rope_freqs.weight): rotation frequency i becomes inv_freq[i] / factors[i]. None: all 1.
    rope_freq_factors: tuple[float, ...] | None = None
    sliding_layers: list[bool] = field(default_factory=list)
    attn_scale: float | None = None  # None: 1 / sqrt(head_dim)
    embed_scale: float = 1.0  # Gemma scales token embeddings by sqrt(dim)
    activation: str = "silu"  # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    qk_norm: bool = False
    post_norms: bool = False  # Gemma 3's extra norms after attention and after the feed-forward block

    def __post_init__(self) -> None:
        if not self.sliding_layers:
            self.sliding_layers = [False] * self.n_layers

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else 1.0 / math.sqrt(self.head_dim)

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and self.sliding_layers[layer]


def gemma3_sliding_layers(n_layers: int, pattern: int = 6) -> list[bool]:
    """Gemma 3 runs five sliding-window layers, then one global layer, and repeats."""
    return [(i + 1) % pattern != 0 for i in range(n_layers)]
