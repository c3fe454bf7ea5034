"""A tokenizer's vocabulary held compactly: every token's UTF-8 bytes in one blob, and a text -> id index made of
sorted 64-bit hashes.

A Python list of 262,144 strings plus a dict over them costs about 50 MB (the default model's vocabulary); this
costs about 6 MB, which matters when a run is given a memory budget. Lookups hash the text's UTF-8 bytes and
binary-search the sorted hashes; a hit is confirmed against the token's bytes, so a hash collision can never
return a wrong id.

The hash (`text_hash`) is the bytes read as a big-endian number modulo a 32-bit prime, beside the length: one
`int.from_bytes` per lookup, and for the whole table a few numpy operations per byte position (`_table_hashes`)
rather than a Python call per token, which made the index a quarter of the model's load time.
"""

from __future__ import annotations

import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np

from netboot.errors import FormatError

_PRIME = 4_294_967_291  # the largest prime below 2^32: (h * 256 + byte) stays within 64 bits


def text_hash(key: bytes) -> int:
    """The index's hash of a token's UTF-8 bytes: their big-endian value mod _PRIME, the length in the high bits."""
    return int.from_bytes(key, "big") % _PRIME | len(key) << 32


def _table_hashes(blob: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`text_hash` of every token at once: Horner's rule one byte position at a time, over the tokens (longest
    first) that are that long."""
    data = np.frombuffer(blob, dtype=np.uint8)
    order = np.argsort(-lengths, kind="stable")
    at, longest_first = starts[order], lengths[order]
    h = np.zeros(len(order), dtype=np.uint64)
    # how many tokens are longer than k, for each k: a prefix of the longest-first order
    longer = np.searchsorted(-longest_first, -np.arange(int(longest_first[0]) if len(order) else 0), side="left")
    for k, count in enumerate(longer.tolist()):
        h[:count] = (h[:count] * np.uint64(256) + data[at[:count] + k]) % np.uint64(_PRIME)
    hashes = np.empty(len(order), dtype=np.int64)
    hashes[order] = (h | (longest_first.astype(np.uint64) << np.uint64(32))).astype(np.int64)
    return hashes


class Vocabulary(Sequence[str]):
    """Token texts by id (decoded on access) and `get(text)` -> id or None."""

    def __init__(self, blob: bytes, starts: np.ndarray, lengths: np.ndarray):
        self._blob = blob
        if len(blob) >= 1 << 31:
            raise FormatError(f"tokenizer vocabulary is too large ({len(blob)} bytes of text)")
        self._starts = array.array("i", np.asarray(starts, dtype=np.int32).tobytes())
        self._lengths = array.array("i", np.asarray(lengths, dtype=np.int32).tobytes())
        hashes = _table_hashes(blob, np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64))
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        self._hashes = array.array("q", sorted_hashes.tobytes())
        self._ids = array.array("i", order.astype(np.int32).tobytes())
        for i in np.nonzero(sorted_hashes[1:] == sorted_hashes[:-1])[0].tolist():
            a, b = self._ids[i], self._ids[i + 1]
            if self.bytes_of(a) == self.bytes_of(b):
                raise FormatError(f"tokenizer vocabulary has duplicate entries ({self[a]!r} at {a} and {b})")

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """From token texts; empty ones are renamed `[EMPTY_i]`, as llama.cpp does, so that they never match."""
        if hasattr(texts, "blob") and hasattr(texts, "starts") and hasattr(texts, "lengths"):
            if not np.any(np.asarray(texts.lengths) == 0):  # a GGUF string array: reuse its bytes as they are
                return cls(texts.blob, texts.starts, texts.lengths)
        encoded = [t.encode("utf-8") or f"[EMPTY_{i}]".encode() for i, t in enumerate(texts)]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        starts = np.zeros(len(encoded), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return cls(b"".join(encoded), starts, lengths)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.bytes_of(i).decode("utf-8", "replace")

    def bytes_of(self, i: int) -> bytes:
        start = self._starts[i]
        return self._blob[start : start + self._lengths[i]]

    def get(self, text: str, default: int | None = None) -> int | None:
        key = text.encode("utf-8")
        h = text_hash(key)
        hashes = self._hashes
        i = bisect_left(hashes, h)
        while i < len(hashes) and hashes[i] == h:
            tid = self._ids[i]
            if self.bytes_of(tid) == key:
                return tid
            i += 1
        return default

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.get(text) is not None
