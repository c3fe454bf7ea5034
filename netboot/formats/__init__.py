"""Model file formats: each reader turns a file into a `ModelFile` (config, tensors by canonical name, tokenizer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from netboot.config import ModelConfig
from netboot.errors import FormatError, NetbootError
from netboot.tensor import QTensor

GGUF_MAGIC = b"GGUF"


def is_gguf(path: str | Path) -> bool:
    """Whether a file starts with GGUF's magic; False when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


@dataclass
class ModelFile:
    """A model as read from its file(s).

    Tensors use GGUF's names whatever the format: token_embd.weight, output_norm.weight, output.weight
    (absent when tied to the embedding), and per layer blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
    ffn_norm, ffn_gate, ffn_up, ffn_down}.weight, plus attn_q_norm, attn_k_norm, post_attention_norm and
    post_ffw_norm for Gemma 3. Matrices are (out_features, in_features). Norm weights are the
    multiplier itself (Gemma's 1 + w already applied, as llama.cpp's GGUF converter does).
    """

    path: Path
    format: str  # "gguf", "llama2c" or "safetensors"
    config: ModelConfig
    tensors: dict[str, QTensor]
    tokenizer_loader: Callable[[], Any] | None  # builds the tokenizer on first use; None when there is none
    metadata: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def tokenizer(self) -> Any:
        """The model's `netboot.tokenizer.Tokenizer`; a NetbootError when the model carries none."""
        if self.tokenizer_loader is None:
            raise NetbootError(f"{self.path}: the model carries no tokenizer (pass --tokenizer)")
        return self.tokenizer_loader()

    def layer_tensors(self, layer: int) -> dict[str, QTensor]:
        prefix = f"blk.{layer}."
        return {name: t for name, t in self.tensors.items() if name.startswith(prefix)}


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a model of this config must have, with their shapes (out_features, in_features)."""
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    shapes = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,)}
    layer = {"attn_norm": (c.dim,), "attn_q": (q, c.dim), "attn_k": (kv, c.dim), "attn_v": (kv, c.dim),
             "attn_output": (c.dim, q), "ffn_norm": (c.dim,), "ffn_gate": (c.ffn_dim, c.dim),
             "ffn_up": (c.ffn_dim, c.dim), "ffn_down": (c.dim, c.ffn_dim)}
    if c.qk_norm:
        layer |= {"attn_q_norm": (c.head_dim,), "attn_k_norm": (c.head_dim,)}
    if c.post_norms:
        layer |= {"post_attention_norm": (c.dim,), "post_ffw_norm": (c.dim,)}
    for i in range(c.n_layers):
        shapes |= {f"blk.{i}.{part}.weight": shape for part, shape in layer.items()}
    return shapes


def check_tensors(file: ModelFile) -> None:
    """Every tensor the forward pass reads is present with the shape the config implies."""
    shapes = expected_shapes(file.config)
    if "output.weight" in file.tensors:
        shapes["output.weight"] = (file.config.vocab_size, file.config.dim)
    for name, shape in shapes.items():
        tensor = file.tensors.get(name)
        if tensor is None:
            raise FormatError(f"{file.path}: tensor {name} is missing")
        if tuple(tensor.shape) != shape:
            raise FormatError(f"{file.path}: tensor {name} has shape {tuple(tensor.shape)}, the config implies {shape}")


def open_model(path: str | Path, tokenizer: str | Path | None = None) -> ModelFile:
    """Open a model file (GGUF, llama2.c .bin, or a SafeTensors file/directory) without copying its weights."""
    file = _open_format(Path(path), tokenizer)
    check_tensors(file)
    return file


def _open_format(path: Path, tokenizer: str | Path | None) -> ModelFile:
    if not path.exists():
        raise NetbootError(f"model not found: {path}")
    if path.is_dir() or path.suffix == ".safetensors":
        from netboot.formats import safetensors

        return safetensors.open_safetensors(path, tokenizer)
    if is_gguf(path) or path.suffix == ".gguf":
        from netboot.formats import gguf

        return gguf.open_gguf(path)
    if path.suffix == ".bin":
        from netboot.formats import llama2c

        return llama2c.open_llama2c(path, tokenizer)
    raise NetbootError(f"{path}: not a model file netboot knows (expected GGUF, llama2.c .bin or SafeTensors)")
