"""Model file formats: each reader turns a file into a `ModelFile` (config, tensors by canonical name, tokenizer)."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from netboot.config import ModelConfig
from netboot.errors import FormatError, NetbootError
from netboot.formats.names import OUTPUT, expected_shapes
from netboot.tensors.qtensor import QTensor

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

    Tensors use GGUF's names whatever the format (`netboot.formats.names`: token_embd.weight, output_norm.weight,
    output.weight when not tied to the embedding, blk.N.<part>.weight for each of a layer's parts). Matrices are
    (out_features, in_features). Norm weights are the multiplier itself (Gemma's 1 + w already applied, as
    llama.cpp's GGUF converter does).
    """

    path: Path
    format: str  # "gguf", "llama2c" or "safetensors"
    config: ModelConfig
    tensors: dict[str, QTensor]
    tokenizer_loader: Callable[[], Any] | None  # builds the tokenizer on first use; None when there is none
    metadata: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def tokenizer(self) -> Any:
        """The model's `netboot.tokenizers.base.Tokenizer`; a NetbootError when the model carries none."""
        if self.tokenizer_loader is None:
            raise NetbootError(f"{self.path}: the model carries no tokenizer (pass --tokenizer)")
        from netboot.memory import paused_gc, trim_heap

        with paused_gc():
            tokenizer = self.tokenizer_loader()
        trim_heap()
        return tokenizer


def check_tensors(file: ModelFile) -> None:
    """Every tensor the forward pass reads is present with the shape the config implies."""
    shapes = expected_shapes(file.config)
    if OUTPUT in file.tensors:
        shapes[OUTPUT] = (file.config.vocab_size, file.config.dim)
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


def _check_kind(path: Path) -> None:
    """A model is a regular file or a directory: a FIFO, a device or a socket would block or never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise NetbootError(f"model not found: {path}") from None
    except OSError as exc:
        raise NetbootError(f"{path}: cannot read ({exc.strerror})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise NetbootError(f"{path}: not a regular file or a directory (a pipe, device or socket is not a model)")


def _open_format(path: Path, tokenizer: str | Path | None) -> ModelFile:
    _check_kind(path)
    if path.is_dir() or path.suffix == ".safetensors":
        from netboot.formats import safetensors

        return safetensors.open_safetensors(path, tokenizer)
    if is_gguf(path) or path.suffix == ".gguf":
        from netboot.formats import gguf

        if tokenizer is not None:
            raise NetbootError(f"{path}: --tokenizer is not used with GGUF: the file carries its own tokenizer")
        return gguf.open_gguf(path)
    if path.suffix == ".bin":
        from netboot.formats import llama2c

        return llama2c.open_llama2c(path, tokenizer)
    raise NetbootError(f"{path}: not a model file netboot knows (expected GGUF, llama2.c .bin or SafeTensors)")
