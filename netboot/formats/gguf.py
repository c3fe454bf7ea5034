"""GGUF v2/v3: metadata, tensor index and tokenizer, parsed over a memory map.

The header is walked with a small cursor over the mapped bytes; tensors become `QTensor` views into the
map, so opening costs the metadata's size, not the model's. String arrays (the vocabulary) are decoded in
one pass over a bytes object rather than one Python object per field of a generic reader.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netboot.config import ModelConfig, gemma3_sliding_layers
from netboot.errors import FormatError, TruncatedHeader, UnsupportedError, shown
from netboot.formats import GGUF_MAGIC, ModelFile
from netboot.formats.names import EMBEDDING
from netboot.sources.base import ByteSource, aligned_buffer
from netboot.tensors.ggml import BLOCK_SIZES, GGMLType, type_name
from netboot.tensors.qtensor import QTensor

DEFAULT_ALIGNMENT = 32

# GGUF value types -> (numpy dtype for scalars and arrays)
_SCALAR_DTYPES = {
    0: np.dtype("<u1"), 1: np.dtype("<i1"), 2: np.dtype("<u2"), 3: np.dtype("<i2"),
    4: np.dtype("<u4"), 5: np.dtype("<i4"), 6: np.dtype("<f4"), 7: np.dtype("<u1"),
    10: np.dtype("<u8"), 11: np.dtype("<i8"), 12: np.dtype("<f8"),
}
_BOOL, _STRING, _ARRAY = 7, 8, 9


class StringArray(Sequence[str]):
    """A GGUF string array (the vocabulary) kept as one bytes object plus offsets: strings are decoded on access,
    so holding 262,144 of them costs their bytes, not a Python object each."""

    def __init__(self, blob: bytes, starts: np.ndarray, lengths: np.ndarray):
        self.blob = blob
        self.starts = starts
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start = int(self.starts[i])
        return self.blob[start : start + int(self.lengths[i])].decode("utf-8", "replace")

    def __iter__(self):
        blob = self.blob
        for start, n in zip(self.starts.tolist(), self.lengths.tolist(), strict=True):
            yield blob[start : start + n].decode("utf-8", "replace")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class _Cursor:
    """Reads little-endian values from a buffer, failing with FormatError past its end."""

    def __init__(self, buf: memoryview, path: Path):
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise TruncatedHeader(
                f"{self.path}: GGUF header is truncated or corrupt (needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.buf)})"
            )
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u64())).decode("utf-8", errors="replace")

    def scalar(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        dtype = self._dtype(vtype)
        value = np.frombuffer(self.take(dtype.itemsize), dtype=dtype)[0].item()
        return bool(value) if vtype == _BOOL else value

    def array(self) -> Any:
        etype, count = self.u32(), self.u64()
        if etype == _STRING:
            return self._strings(count)
        if etype == _ARRAY:
            return [self.array() for _ in range(count)]
        dtype = self._dtype(etype)
        values = np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype)
        return values.astype(bool) if etype == _BOOL else values

    def value(self, vtype: int) -> Any:
        return self.array() if vtype == _ARRAY else self.scalar(vtype)

    def _strings(self, count: int) -> StringArray:
        """A string array's bounds, found by walking its length prefixes; the strings stay undecoded bytes."""
        buf = self.buf
        start = self.pos
        unpack = struct.Struct("<Q").unpack_from
        starts = np.empty(count, dtype=np.int64)
        lengths = np.empty(count, dtype=np.int64)
        pos, end = start, len(buf)
        for i in range(count):
            if pos + 8 > end:
                raise TruncatedHeader(f"{self.path}: GGUF string array runs past the end of the file")
            (n,) = unpack(buf, pos)
            starts[i], lengths[i] = pos + 8, n
            pos += 8 + n
            if pos > end:
                raise TruncatedHeader(f"{self.path}: GGUF string array runs past the end of the file")
        self.pos = pos
        return StringArray(bytes(buf[start:pos]), starts - start, lengths)

    def _dtype(self, vtype: int) -> np.dtype:
        try:
            return _SCALAR_DTYPES[vtype]
        except KeyError:
            raise FormatError(f"{self.path}: unknown GGUF value type {vtype} at offset {self.pos}") from None


TensorInfo = tuple[str, list[int], int, int]  # name, dims (GGUF order), type id, offset in the file


def parse_header(buf: memoryview, path: Path | str, file_size: int | None = None,
                 ) -> tuple[dict[str, Any], list[TensorInfo], int]:
    """Metadata, the tensors' descriptions and the data section's offset, from a buffer holding at least the
    header (TruncatedHeader when it does not); `file_size` bounds the counts when `buf` is only a prefix."""
    size = len(buf) if file_size is None else file_size
    cur = _Cursor(buf, path)
    if bytes(cur.take(4)) != GGUF_MAGIC:
        raise FormatError(f"{path}: not a GGUF file (bad magic)")
    version = cur.u32()
    if version not in (2, 3):
        raise UnsupportedError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_tensors > size // 24 or n_kv > size // 12:
        raise FormatError(f"{path}: GGUF header counts ({n_tensors} tensors, {n_kv} keys) exceed the file size")

    metadata: dict[str, Any] = {"GGUF.version": version}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.u32())

    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > 4:
            raise FormatError(f"{path}: tensor {name} has {n_dims} dimensions")
        dims = [cur.u64() for _ in range(n_dims)]
        type_id, rel = cur.u32(), cur.u64()
        infos.append((name, dims, type_id, rel))

    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-cur.pos // alignment) * alignment
    return metadata, [(name, dims, t, data_start + rel) for name, dims, t, rel in infos], data_start


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, QTensor], int]:
    """Metadata, tensors (views into the map) and the data section's offset."""
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:
        raise FormatError(f"{path}: file is empty") from None
    metadata, infos, data_start = parse_header(memoryview(mm), path)
    arr = np.frombuffer(mm, dtype=np.uint8)
    tensors = {}
    for name, dims, type_id, start in infos:
        tensors[name] = _tensor(path, arr, name, dims, type_id, start)
    return metadata, tensors, data_start


def _tensor(path: Path, arr: np.ndarray, name: str, dims: list[int], type_id: int, start: int) -> QTensor:
    dims = dims or [1]  # a 0-d tensor holds one element, as in ggml
    try:
        qtype = GGMLType(type_id)
        elems, block_bytes = BLOCK_SIZES[qtype]
    except (ValueError, KeyError):
        raise UnsupportedError(
            f"{path}: tensor {name} has type {type_name(type_id)}, which netboot does not support"
        ) from None
    n = math.prod(dims)
    if dims[0] % elems:
        raise FormatError(f"{path}: tensor {name} row of {dims[0]} is not whole {qtype.name} blocks")
    nbytes = n // elems * block_bytes
    if start + nbytes > arr.size:
        raise FormatError(
            f"{path}: tensor {name} ends at byte {start + nbytes}, past the end of the file ({arr.size} bytes): "
            "the file is truncated or its header is corrupt"
        )
    shape = tuple(reversed(dims))
    return QTensor.from_bytes(name, qtype, shape, arr[start : start + nbytes], offset=start)


def _config(path: Path, meta: dict[str, Any], tensors: dict[str, QTensor]) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch not in ("llama", "gemma3"):
        raise UnsupportedError(f"{path}: architecture {arch!r} is not supported (llama and gemma3 are)")

    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise FormatError(f"{path}: missing metadata key {arch}.{name}")
        return value

    dim = int(key("embedding_length"))
    n_heads = int(key("attention.head_count"))
    n_kv_heads = int(key("attention.head_count_kv", n_heads))
    head_dim = int(key("attention.key_length", dim // n_heads))
    n_layers = int(key("block_count"))
    if EMBEDDING not in tensors:
        raise FormatError(f"{path}: no {EMBEDDING} tensor")
    common = dict(
        arch=arch, n_layers=n_layers, dim=dim, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
        ffn_dim=int(key("feed_forward_length")), vocab_size=tensors[EMBEDDING].shape[0],
        context_length=int(key("context_length", 2048)), norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(key("rope.freq_base", 10000.0)), rope_freq_factors=None,
    )
    # llama.cpp's rope_freqs.weight (Llama 3.1's RoPE scaling): one divisor per rotation frequency.
    freqs = tensors.get("rope_freqs.weight")
    if freqs is not None:
        factors = freqs.to_float32().reshape(-1).astype(np.float64)
        if factors.size != head_dim // 2:
            raise FormatError(
                f"{path}: rope_freqs.weight has {factors.size} values, expected head_dim / 2 = {head_dim // 2}"
            )
        if not np.all(np.isfinite(factors) & (factors > 0)):
            raise FormatError(f"{path}: rope_freqs.weight holds values that are not positive finite numbers")
        common["rope_freq_factors"] = tuple(factors.tolist())
    if arch == "llama":
        return ModelConfig(**common, rope_style="interleaved")
    # Gemma 3: 27B scales queries by dim / n_heads, the others by head_dim (query_pre_attn_scalar).
    scalar = dim / n_heads if n_layers == 62 else head_dim
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    sliding = [bool(x) for x in pattern] if pattern is not None else gemma3_sliding_layers(n_layers)
    return ModelConfig(
        **common, rope_style="halves", sliding_window=int(key("attention.sliding_window")), sliding_layers=sliding,
        rope_base_local=10000.0, rope_scale=float(key("rope.scaling.factor", 1.0)), attn_scale=1.0 / math.sqrt(scalar),
        embed_scale=math.sqrt(dim), activation="gelu_tanh", qk_norm=True, post_norms=True,
    )


def _tokenizer_loader(meta: dict[str, Any]):
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        return None
    if model != "llama":
        raise UnsupportedError(f"tokenizer model {model!r} in GGUF metadata is not supported (llama/SentencePiece is)")

    def load():
        from netboot.tokenizers.spm import SPMTokenizer

        return SPMTokenizer.from_gguf_metadata(meta)

    return load


def open_gguf(path: Path) -> ModelFile:
    metadata, tensors, _ = read_gguf(path)
    config = _config(path, metadata, tensors)
    return ModelFile(path, "gguf", config, tensors, _tokenizer_loader(metadata), metadata)


HEADER_PREFIX = 1 << 20  # first guess at a GGUF header's size; grown 4x until the header fits


def open_gguf_header(source: ByteSource) -> ModelFile:
    """The `ModelFile` (config, tokenizer, tensor index) of a remote GGUF, without its weights: the header's bytes,
    and the small tensors read at open (rope_freqs), are placed in a sparse in-memory copy of the file whose other
    bytes stay holes that nothing reads."""
    from netboot.formats import open_model

    n = min(HEADER_PREFIX, source.size)
    prefix = source.read(0, n, aligned_buffer(n))
    while True:
        try:
            _, infos, data_start = parse_header(memoryview(prefix), shown(source.name), source.size)
            break
        except TruncatedHeader:
            if n >= source.size:
                raise
            have, n = n, min(4 * n, source.size)
            grown = aligned_buffer(n)
            grown[:have] = prefix
            prefix = grown[:n]
            prefix[have:] = source.read(have, n - have, aligned_buffer(n - have))  # only the bytes not read yet
    fd = os.memfd_create("netboot-header", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, source.size)
        os.pwrite(fd, memoryview(prefix)[:data_start], 0)
        file = open_model(f"/proc/self/fd/{fd}")
        small = file.tensors.get("rope_freqs.weight")
        if small is not None:
            raw = source.read(small.offset, small.nbytes, aligned_buffer(small.nbytes))
            os.pwrite(fd, memoryview(raw), small.offset)
            file = open_model(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return file
