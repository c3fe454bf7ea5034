"""A tokenizer's vocabulary held compactly: every token's UTF-8 bytes in one blob, and a text -> id index made of
sorted 64-bit hashes.

A Python list of 262,144 strings plus a dict over them costs about 50 MB (the default model's vocabulary); this
costs about 6 MB, which matters when a run is given a memory budget. Lookups hash the text's UTF-8 bytes and
binary-search the sorted hashes; a hit is confirmed against the token's bytes, so a hash collision can never
return a wrong id.
"""

from __future__ import annotations

import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np

from netboot.errors import FormatError


class Vocabulary(Sequence[str]):
    """Token texts by id (decoded on access) and `get(text)` -> id or None."""

    def __init__(self, blob: bytes, starts: np.ndarray, lengths: np.ndarray):
        self._blob = blob
        if len(blob) >= 1 << 31:
            raise FormatError(f"tokenizer vocabulary is too large ({len(blob)} bytes of text)")
        self._starts = array.array("i", np.asarray(starts, dtype=np.int32).tobytes())
        self._lengths = array.array("i", np.asarray(lengths, dtype=np.int32).tobytes())
        hashes = np.fromiter(
            (hash(blob[s : s + n]) for s, n in zip(self._starts, self._lengths, strict=True)),
            dtype=np.int64,
            count=len(self._starts),
        )
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
        h = hash(key)
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
