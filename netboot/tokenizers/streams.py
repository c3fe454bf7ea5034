"""Incremental decoders: the two ways a tokenizer here turns a stream of ids into text (``StreamDecoder``)."""

from __future__ import annotations

import codecs
from collections.abc import Callable


class ByteStreamDecoder:
    """Stream decoder over per-token byte pieces; ``render(prev_id, id)`` gives a token's bytes."""

    def __init__(self, render: Callable[[int | None, int], bytes]):
        self._render = render
        self._prev: int | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        piece = self._render(self._prev, token_id)
        self._prev = token_id
        return self._utf8.decode(piece)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class WindowStreamDecoder:
    """Incremental decoding for tokenizers that only decode whole sequences: decodes a short window of
    recent ids and emits what it adds, holding back text that ends in an incomplete character (U+FFFD)."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # ids up to here have been emitted

    def _new_text(self) -> str:
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full = self._decode(self._ids[self._prefix :])
        return full[len(prefix_text) :] if len(full) > len(prefix_text) else ""

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        new = self._new_text()
        if not new or new.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix > 64:  # keep the id list short
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return new

    def flush(self) -> str:
        new = self._new_text()
        self._prefix = self._read = len(self._ids)
        return new
