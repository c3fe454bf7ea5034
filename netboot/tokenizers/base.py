"""The tokenizer interface: the ``Tokenizer`` and ``StreamDecoder`` protocols every tokenizer here offers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


@runtime_checkable
class StreamDecoder(Protocol):
    """Turns a stream of token ids into text, holding back bytes of a character not yet complete."""

    def push(self, token_id: int) -> str:
        """Adds one token; returns the text that became printable with it (possibly empty)."""
        ...

    def flush(self) -> str:
        """Returns whatever is still held back (an incomplete character becomes U+FFFD)."""
        ...


@runtime_checkable
class Tokenizer(Protocol):
    """What the runtime needs from a tokenizer, whatever file it came from."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    add_bos: bool

    def token_piece(self, token_id: int) -> str:
        """The vocabulary entry of a token as stored (e.g. ``"▁Hello"``, ``"<0x0A>"``, ``"<eos>"``)."""
        ...

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_bos=None`` follows the model's own setting."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a token sequence, special (control) tokens rendered as nothing."""
        ...

    def is_eog(self, token_id: int) -> bool:
        """Whether generation should stop at this token."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """A fresh incremental decoder."""
        ...


def check_id(token_id: int, vocab_size: int) -> int:
    """``token_id`` as an int; a ValueError when it is outside a vocabulary of ``vocab_size`` tokens."""
    token_id = int(token_id)
    if not 0 <= token_id < vocab_size:
        raise ValueError(f"token id {token_id} is out of range for a vocabulary of {vocab_size}")
    return token_id
