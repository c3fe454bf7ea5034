"""llama2.c checkpoints (`.bin`): a header of seven int32 and float32 tensors one after another.

Layout (run.c's "legacy" version-0 export): dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
then token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim), wv (L, kv_dim, dim),
wo (L, dim, dim), rms_ffn (L, dim), w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim),
two unused RoPE tables (seq_len * head_size / 2 floats each), and wcls (vocab, dim) when vocab_size is negative
(an unshared classifier). The file is memory-mapped and every tensor is an F32 `QTensor` view of it.

llama2.c's exporters permute q/k into the interleaved RoPE order (adjacent pairs rotate together), as llama.cpp
does, so the model runs with rope_style "interleaved".
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from netboot.config import ModelConfig
from netboot.errors import FormatError, NetbootError, UnsupportedError
from netboot.formats import ModelFile
from netboot.tensors.ggml import GGMLType
from netboot.tensors.qtensor import QTensor

HEADER = struct.Struct("<7i")
VERSIONED_MAGIC = struct.pack("<I", 0x616B3432)  # "ak42", reversed: export.py's version 1 and later
FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


def read_header(path: Path, head: bytes) -> dict[str, int]:
    if head[:4] == VERSIONED_MAGIC:
        version = struct.unpack_from("<i", head, 4)[0] if len(head) >= 8 else "?"
        raise UnsupportedError(
            f"{path}: llama2.c export version {version} (the 'ak42' header) is not supported; "
            "only the legacy version-0 layout is (export.py --version 0)"
        )
    if len(head) < HEADER.size:
        raise FormatError(
            f"{path}: too short for a llama2.c checkpoint ({len(head)} bytes, the header alone is {HEADER.size})"
        )
    return dict(zip(FIELDS, HEADER.unpack_from(head), strict=True))


def _check_header(path: Path, h: dict[str, int]) -> None:
    def bad(what: str) -> FormatError:
        values = ", ".join(f"{k}={v}" for k, v in h.items())
        return FormatError(f"{path}: not a valid llama2.c checkpoint: {what} (header: {values})")

    for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "seq_len"):
        if h[name] <= 0:
            raise bad(f"{name} must be positive")
    if h["vocab_size"] == 0:
        raise bad("vocab_size is zero")
    if h["dim"] % h["n_heads"]:
        raise bad("dim is not a multiple of n_heads")
    if h["n_kv_heads"] > h["n_heads"] or h["n_heads"] % h["n_kv_heads"]:
        raise bad("n_heads is not a multiple of n_kv_heads")
    if (h["dim"] // h["n_heads"]) % 2:
        raise bad("the head size is odd")


def open_llama2c(path: Path, tokenizer: str | Path | None = None) -> ModelFile:
    """Open a llama2.c `.bin` checkpoint without copying its weights."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = read_header(path, f.read(HEADER.size))
    _check_header(path, h)
    dim, hidden, n_layers = h["dim"], h["hidden_dim"], h["n_layers"]
    n_heads, n_kv_heads, seq_len = h["n_heads"], h["n_kv_heads"], h["seq_len"]
    shared = h["vocab_size"] > 0
    vocab = abs(h["vocab_size"])
    head_size = dim // n_heads
    kv_dim = head_size * n_kv_heads

    # (canonical name, or None for the unused RoPE tables; one per layer?; shape)
    layout: list[tuple[str | None, bool, tuple[int, ...]]] = [
        ("token_embd", False, (vocab, dim)),
        ("attn_norm", True, (dim,)),
        ("attn_q", True, (dim, dim)),
        ("attn_k", True, (kv_dim, dim)),
        ("attn_v", True, (kv_dim, dim)),
        ("attn_output", True, (dim, dim)),
        ("ffn_norm", True, (dim,)),
        ("ffn_gate", True, (hidden, dim)),
        ("ffn_down", True, (dim, hidden)),
        ("ffn_up", True, (hidden, dim)),
        ("output_norm", False, (dim,)),
        (None, False, (seq_len * head_size // 2,)),
        (None, False, (seq_len * head_size // 2,)),
    ]
    if not shared:
        layout.append(("output", False, (vocab, dim)))
    total_floats = sum(math.prod(shape) * (n_layers if per_layer else 1) for _, per_layer, shape in layout)
    expected = HEADER.size + 4 * total_floats
    if size < expected:
        raise FormatError(
            f"{path}: llama2.c checkpoint is truncated: its header implies {expected} bytes, the file has {size}"
        )
    config = ModelConfig(
        arch="llama", n_layers=n_layers, dim=dim, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_size,
        ffn_dim=hidden, vocab_size=vocab, context_length=seq_len, norm_eps=1e-5, rope_base=10000.0,
        rope_style="interleaved",
    ).validate(path)

    data = np.memmap(path, dtype=np.uint8, mode="r")
    tensors: dict[str, QTensor] = {}
    offset = HEADER.size
    for name, per_layer, shape in layout:
        nbytes = 4 * math.prod(shape)
        for layer in range(n_layers if per_layer else 1):
            if name is not None:
                full = f"blk.{layer}.{name}.weight" if per_layer else f"{name}.weight"
                raw = data[offset : offset + nbytes]
                tensors[full] = QTensor.from_bytes(full, GGMLType.F32, shape, raw, offset=offset)
            offset += nbytes

    metadata = {"llama2c.header": h, "llama2c.shared_classifier": shared}
    return ModelFile(path, "llama2c", config, tensors, _tokenizer_loader(path, tokenizer, vocab), metadata)


def _tokenizer_loader(path: Path, tokenizer: str | Path | None, vocab: int):
    if tokenizer is None:
        candidate = path.with_name("tokenizer.bin")
        if not candidate.is_file():
            return None
    else:
        candidate = Path(tokenizer)
        if not candidate.exists():
            raise NetbootError(f"tokenizer not found: {candidate}")

    def load():
        from netboot.tokenizers.hf import HFTokenizer
        from netboot.tokenizers.llama2c import Llama2cTokenizer

        if candidate.is_dir() or candidate.suffix == ".json":
            json_path = candidate / "tokenizer.json" if candidate.is_dir() else candidate
            return HFTokenizer.from_file(json_path)
        return Llama2cTokenizer.from_file(candidate, vocab)

    return load
