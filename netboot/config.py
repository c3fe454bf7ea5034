"""The hyperparameters of a model, whatever file format they came from."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from netboot.errors import FormatError, clipped

PREFILL_BATCH = 256  # prompt tokens per forward pass: bounds the attention scores' memory

# The largest value each size may take: well above any released model, far below what would exhaust memory or
# time before the first token (a corrupt header saying 2^31 layers is refused here, not by the allocator).
LIMITS = {
    "n_layers": 4096, "dim": 1 << 17, "n_heads": 4096, "n_kv_heads": 4096, "head_dim": 4096, "ffn_dim": 1 << 20,
    "vocab_size": 1 << 22, "context_length": 1 << 24, "sliding_window": 1 << 24,
}
FLOAT_LIMIT = 1e12  # the largest RoPE base or scale accepted; eps must lie in (0, 1)


def int_field(where: object, key: str, value: Any, low: int = 1, high: int = 1 << 31) -> int:
    """`value` as an int in [low, high], or a FormatError naming `key`: a float (1.5, even 2.0), a bool, a string
    or a list is not a count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise FormatError(f"{where}: {key} must be an integer, not {clipped(value)}")
    if not low <= int(value) <= high:
        raise FormatError(f"{where}: {key} is {int(value)}, outside [{low}, {high}]")
    return int(value)


def float_field(where: object, key: str, value: Any) -> float:
    """`value` as a finite float, or a FormatError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FormatError(f"{where}: {key} must be a number, not {clipped(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise FormatError(f"{where}: {key} is {clipped(value)}, not a finite number")
    return result


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
        if not self.sliding_layers and isinstance(self.n_layers, int) and 0 < self.n_layers <= LIMITS["n_layers"]:
            self.sliding_layers = [False] * self.n_layers

    def validate(self, where: object) -> ModelConfig:
        """The config itself, or a FormatError naming the first field that no model could have: every reader calls
        this before anything is sized from the config."""
        for name, high in LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                int_field(where, name, value, 1, high)
        self._check_shapes(where)
        self._check_floats(where)
        if len(self.sliding_layers) != self.n_layers:
            raise FormatError(f"{where}: {len(self.sliding_layers)} sliding-window flags for {self.n_layers} layers")
        return self

    def _check_shapes(self, where: object) -> None:
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
            raise FormatError(
                f"{where}: n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}"
            )
        if self.head_dim % 2:
            raise FormatError(f"{where}: head_dim {self.head_dim} is odd (RoPE rotates pairs)")
        if self.arch not in ("llama", "gemma3") or self.rope_style not in ("interleaved", "halves"):
            raise FormatError(f"{where}: unknown architecture {clipped(self.arch)} or RoPE style")
        if self.activation not in ("silu", "gelu_tanh"):
            raise FormatError(f"{where}: unknown activation {clipped(self.activation)}")

    def _check_floats(self, where: object) -> None:
        eps = float_field(where, "norm_eps", self.norm_eps)
        if not 0 < eps < 1:
            raise FormatError(f"{where}: norm_eps {eps!r} is not in (0, 1)")
        for name in ("rope_base", "rope_base_local", "rope_scale", "embed_scale", "attn_scale"):
            value = getattr(self, name)
            if value is not None and not 0 < float_field(where, name, value) <= FLOAT_LIMIT:
                raise FormatError(f"{where}: {name} {value!r} is not in (0, {FLOAT_LIMIT:g}]")
        if self.rope_base <= 1 or self.rope_base_local <= 1:
            raise FormatError(f"{where}: RoPE base {self.rope_base!r} / {self.rope_base_local!r} must exceed 1")
        factors = self.rope_freq_factors
        if factors is not None:
            if len(factors) != self.head_dim // 2:
                raise FormatError(f"{where}: {len(factors)} RoPE frequency factors for head_dim {self.head_dim}")
            if not all(0 < float_field(where, "rope_freq_factors", f) <= FLOAT_LIMIT for f in factors):
                raise FormatError(f"{where}: RoPE frequency factors must be positive")

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else 1.0 / math.sqrt(self.head_dim)

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and self.sliding_layers[layer]


def gemma3_sliding_layers(n_layers: int, pattern: int = 6) -> list[bool]:
    """Gemma 3 runs five sliding-window layers, then one global layer, and repeats."""
    return [(i + 1) % pattern != 0 for i in range(n_layers)]
