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
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netboot.config import LIMITS, ModelConfig, float_field, gemma3_sliding_layers, int_field
from netboot.errors import FormatError, TruncatedHeader, UnsupportedError, clipped, shown
from netboot.formats import GGUF_MAGIC, ModelFile
from netboot.formats.names import EMBEDDING
from netboot.memory import trim_heap
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
_MIN_BYTES = {_STRING: 8, _ARRAY: 12}  # the fewest bytes one element of these types takes (its length prefix)
MAX_NESTING = 4  # arrays of arrays: llama.cpp writes none deeper than 2; a corrupt header could nest thousands


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


_MAX_WINDOW = 1 << 16  # bytes of a string array scanned at once for its length prefixes


def _prefixes(buf: memoryview, pos: int, wend: int) -> tuple[np.ndarray, np.ndarray]:
    """Where length prefixes may start in `buf[pos:wend]` (absolute offsets, ascending) and the lengths they hold.

    A candidate is the start of 8 bytes whose last 5 are zero (a length below 2^24) and that end a run of zero
    bytes: the byte after them, a string's first, is not zero. Every prefix of a non-empty string not starting
    with a NUL byte is one; other positions may be too. The caller confirms them."""
    w = np.frombuffer(buf, dtype=np.uint8, count=wend - pos, offset=pos)
    zero = w == 0
    n = len(w) - 8
    rel = np.flatnonzero(zero[7 : 7 + n] > zero[8 : 8 + n])  # byte 7 zero, byte 8 not: the end of a zero run
    rel = rel[(w[rel + 3] | w[rel + 4] | w[rel + 5] | w[rel + 6]) == 0]
    lengths = w[rel].astype(np.int64)
    lengths |= w[rel + 1].astype(np.int64) << 8
    lengths |= w[rel + 2].astype(np.int64) << 16
    return rel + pos, lengths


class _Cursor:
    """Reads little-endian values from a buffer, failing with FormatError past its end."""

    def __init__(self, buf: memoryview, path: Path, file_size: int | None = None):
        self.buf = buf
        self.pos = 0
        self.path = path
        self.file_size = len(buf) if file_size is None else file_size

    def need(self, n: int, what: str) -> None:
        """FormatError unless `n` more bytes lie in the file; TruncatedHeader unless they lie in the buffer (a
        prefix of a remote file is then grown, never past the file's size)."""
        if self.pos + n > self.file_size:
            raise FormatError(
                f"{self.path}: GGUF header is corrupt ({what} needs {n} bytes at offset {self.pos}, "
                f"file has {self.file_size})"
            )
        if self.pos + n > len(self.buf):
            raise TruncatedHeader(
                f"{self.path}: GGUF header is truncated or corrupt ({what} needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.buf)})"
            )

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

    def array(self, depth: int = 0) -> Any:
        etype, count = self.u32(), self.u64()
        if depth >= MAX_NESTING:
            raise FormatError(f"{self.path}: GGUF arrays nested deeper than {MAX_NESTING} at offset {self.pos}")
        # Each element takes at least this many bytes: a count the rest of the buffer cannot hold is refused before
        # anything is allocated for it.
        least = _MIN_BYTES.get(etype) or self._dtype(etype).itemsize
        self.need(count * least, f"an array of {count} elements")
        if etype == _STRING:
            return self._strings(count)
        if etype == _ARRAY:
            return [self.array(depth + 1) for _ in range(count)]
        dtype = self._dtype(etype)
        values = np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype)
        return values.astype(bool) if etype == _BOOL else values

    def value(self, vtype: int) -> Any:
        return self.array() if vtype == _ARRAY else self.scalar(vtype)

    def _strings(self, count: int) -> StringArray:
        """A string array's bounds, found from its length prefixes; the strings stay undecoded bytes.

        The prefixes are found a window of bytes at a time with numpy (`_prefixes`), and only confirmed here: a
        candidate followed by the one its length points at is the walk's next step, so each run of confirmed
        candidates is taken at once. Whatever the candidates miss (empty strings, strings starting with NUL bytes,
        strings longer than the window, the end of the buffer) is walked one prefix at a time (`step`), which
        also raises every error; the result is the same as a walk over every prefix.
        """
        buf = self.buf
        start = pos = self.pos
        end = len(buf)
        unpack = struct.Struct("<Q").unpack_from
        path = self.path
        runs: list[tuple[np.ndarray, np.ndarray]] = []  # (prefix offsets, lengths), in order
        single_at: list[int] = []  # prefixes walked one at a time since the last run
        single_len: list[int] = []
        k = 0

        def step() -> None:  # one prefix, exactly as a plain walk over them takes it
            nonlocal pos, k
            if pos + 8 > end:
                raise TruncatedHeader(f"{path}: GGUF string array runs past the end of the file")
            (n,) = unpack(buf, pos)
            if n > end - pos - 8:  # checked before it is stored: a u64 length need not fit an int64
                raise TruncatedHeader(f"{path}: GGUF string array runs past the end of the file")
            single_at.append(pos)
            single_len.append(n)
            pos += 8 + n
            k += 1

        def flush() -> None:
            if single_at:
                runs.append((np.array(single_at, dtype=np.int64), np.array(single_len, dtype=np.int64)))
                single_at.clear()
                single_len.clear()

        window = count * 16 + 4096  # a guess at the array's size; then from the strings seen so far
        while k < count:
            wend = min(end, pos + min(window, _MAX_WINDOW))
            if wend - pos < 64:
                step()
                continue
            at, lengths = _prefixes(buf, pos, wend)
            nxt = at + 8 + lengths
            # runs end where a candidate's successor is not the next candidate (and at the last candidate)
            breaks = np.flatnonzero(at[1:] != nxt[:-1]).tolist()
            breaks.append(len(at) - 1)
            while k < count and pos + 9 <= wend:
                i = int(np.searchsorted(at, pos))
                if i == len(at) or at[i] != pos:
                    step()  # a prefix the window's candidates miss
                    continue
                r = breaks[bisect_left(breaks, i)]
                last = i + min(r - i, count - k - 1)
                overrun = last == r and nxt[r] > end  # the run's last string runs past the end
                if overrun:
                    last -= 1
                if last >= i:
                    flush()
                    runs.append((at[i : last + 1], lengths[i : last + 1]))
                    k += last + 1 - i
                    pos = int(nxt[last])
                if overrun:
                    step()  # raises
            window = (pos - start) * (count - k) // k + 4096
        flush()
        self.pos = pos
        if runs:
            prefix_at = np.concatenate([r[0] for r in runs])
            lengths_all = np.concatenate([r[1] for r in runs])
        else:
            prefix_at = lengths_all = np.zeros(0, dtype=np.int64)
        return StringArray(bytes(buf[start:pos]), prefix_at + (8 - start), lengths_all)

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
    cur = _Cursor(buf, path, size)
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
            raise FormatError(f"{path}: tensor {clipped(name)} has {n_dims} dimensions")
        dims = [cur.u64() for _ in range(n_dims)]
        type_id, rel = cur.u32(), cur.u64()
        infos.append((name, dims, type_id, rel))

    alignment = _alignment(path, metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-cur.pos // alignment) * alignment
    trim_heap()  # the string arrays' temporaries
    return metadata, [(name, dims, t, data_start + rel) for name, dims, t, rel in infos], data_start


def _alignment(path: Path | str, value: Any) -> int:
    alignment = int_field(path, "general.alignment", value, 1, 1 << 16)
    if alignment & (alignment - 1):
        raise FormatError(f"{path}: general.alignment {alignment} is not a power of two")
    return alignment


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
            f"{path}: tensor {clipped(name)} has type {type_name(type_id)}, which netboot does not support"
        ) from None
    n = math.prod(dims)
    if dims[0] % elems:
        raise FormatError(f"{path}: tensor {clipped(name)} row of {dims[0]} is not whole {qtype.name} blocks")
    nbytes = n // elems * block_bytes
    if start + nbytes > arr.size:
        raise FormatError(
            f"{path}: tensor {clipped(name)} ends at byte {start + nbytes}, past the end of the file "
            f"({arr.size} bytes): the file is truncated or its header is corrupt"
        )
    shape = tuple(reversed(dims))
    return QTensor.from_bytes(name, qtype, shape, arr[start : start + nbytes], offset=start)


def _config(path: Path, meta: dict[str, Any], tensors: dict[str, QTensor]) -> ModelConfig:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or arch not in ("llama", "gemma3"):
        raise UnsupportedError(f"{path}: architecture {clipped(arch)} is not supported (llama and gemma3 are)")
    if EMBEDDING not in tensors:
        raise FormatError(f"{path}: no {EMBEDDING} tensor")

    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise FormatError(f"{path}: missing metadata key {arch}.{name}")
        return value

    def count(name: str, limit: str, default: Any = None) -> int:
        return int_field(path, f"{arch}.{name}", key(name, default), 1, LIMITS[limit])

    def real(name: str, default: float) -> float:
        return float_field(path, f"{arch}.{name}", key(name, default))

    dim = count("embedding_length", "dim")
    n_heads = count("attention.head_count", "n_heads")
    n_layers = count("block_count", "n_layers")
    explicit_head_dim = meta.get(f"{arch}.attention.key_length")
    if explicit_head_dim is None and dim % n_heads:
        raise FormatError(f"{path}: {arch}.attention.head_count {n_heads} does not divide the width {dim}")
    common = dict(
        arch=arch, n_layers=n_layers, dim=dim, n_heads=n_heads,
        n_kv_heads=count("attention.head_count_kv", "n_kv_heads", n_heads),
        head_dim=count("attention.key_length", "head_dim", dim // n_heads),
        ffn_dim=count("feed_forward_length", "ffn_dim"), vocab_size=tensors[EMBEDDING].shape[0],
        context_length=count("context_length", "context_length", 2048),
        norm_eps=real("attention.layer_norm_rms_epsilon", 1e-5), rope_base=real("rope.freq_base", 10000.0),
    )
    head_dim = common["head_dim"]
    common["rope_freq_factors"] = _rope_freq_factors(path, tensors, head_dim)
    if arch == "llama":
        return ModelConfig(**common, rope_style="interleaved").validate(path)
    # Gemma 3: 27B scales queries by dim / n_heads, the others by head_dim (query_pre_attn_scalar).
    scalar = dim / n_heads if n_layers == 62 else head_dim
    return ModelConfig(
        **common, rope_style="halves", sliding_window=count("attention.sliding_window", "sliding_window"),
        sliding_layers=_sliding_layers(path, meta.get(f"{arch}.attention.sliding_window_pattern"), n_layers),
        rope_base_local=10000.0, rope_scale=real("rope.scaling.factor", 1.0), attn_scale=1.0 / math.sqrt(scalar),
        embed_scale=math.sqrt(dim), activation="gelu_tanh", qk_norm=True, post_norms=True,
    ).validate(path)


def _rope_freq_factors(path: Path, tensors: dict[str, QTensor], head_dim: int) -> tuple[float, ...] | None:
    """llama.cpp's rope_freqs.weight (Llama 3.1's RoPE scaling): one divisor per rotation frequency."""
    freqs = tensors.get("rope_freqs.weight")
    if freqs is None:
        return None
    if freqs.nbytes > 4 * LIMITS["head_dim"] or freqs.qtype.name not in ("F32", "F16", "BF16"):
        raise FormatError(f"{path}: rope_freqs.weight has {freqs.nbytes} bytes of {freqs.qtype.name}")
    factors = freqs.to_float32().reshape(-1).astype(np.float64)
    if factors.size != head_dim // 2:
        raise FormatError(
            f"{path}: rope_freqs.weight has {factors.size} values, expected head_dim / 2 = {head_dim // 2}"
        )
    if not np.all(np.isfinite(factors) & (factors > 0)):
        raise FormatError(f"{path}: rope_freqs.weight holds values that are not positive finite numbers")
    return tuple(factors.tolist())


def _sliding_layers(path: Path, pattern: Any, n_layers: int) -> list[bool]:
    """Gemma 3's sliding-window layers: a flag per layer, a period (every Nth layer global), or the default."""
    if pattern is None:
        return gemma3_sliding_layers(n_layers)
    if isinstance(pattern, np.ndarray) and pattern.ndim == 1 and pattern.dtype.kind in "biu":
        if pattern.size != n_layers:
            raise FormatError(f"{path}: sliding_window_pattern has {pattern.size} flags for {n_layers} layers")
        return [bool(x) for x in pattern.tolist()]
    return gemma3_sliding_layers(n_layers, int_field(path, "sliding_window_pattern", pattern, 1, LIMITS["n_layers"]))


def _tokenizer_loader(meta: dict[str, Any]):
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        return None
    if not isinstance(model, str) or model != "llama":
        raise UnsupportedError(
            f"tokenizer model {clipped(model)} in GGUF metadata is not supported (llama/SentencePiece is)"
        )

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
