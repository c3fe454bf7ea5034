"""The tokenizer of llama2.c's ``run.c``: ``tokenizer.bin`` (vocabulary strings and merge scores) and its use."""

from __future__ import annotations

import array
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from netboot.errors import FormatError
from netboot.tokenizers.base import StreamDecoder, check_id
from netboot.tokenizers.merges import merge_pairs
from netboot.tokenizers.streams import ByteStreamDecoder

_L2C_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{1,2})")


class Llama2cTokenizer:
    """The tokenizer of llama2.c's ``run.c``: vocabulary strings (with real spaces) and merge scores.

    ``encode`` follows run.c's ``encode()``: optional BOS (id 1), a dummy-prefix space token when the text is not
    empty, one token per UTF-8 character (or byte-fallback ids ``byte + 3``), then repeatedly the adjacent pair
    whose concatenated string is in the vocabulary with the highest score (ties: leftmost) is merged.
    ``decode`` follows run.c's ``decode()``: a leading space is dropped after BOS and ``<0xXX>`` pieces are raw
    bytes. BOS and EOS themselves render as nothing (run.c never prints them).
    """

    bos_id = 1
    eos_id = 2

    def __init__(self, vocab: Sequence[bytes], scores: Sequence[float], max_token_length: int = 0):
        if len(vocab) != len(scores):
            raise ValueError("vocab and scores differ in length")
        if len(vocab) < 3:
            raise FormatError("llama2.c vocabulary needs at least <unk>, <s> and </s>")
        self._vocab = [bytes(v) for v in vocab]
        self._scores = array.array("f", scores)
        self.vocab_size = len(self._vocab)
        self.max_token_length = max_token_length
        self.add_bos = True
        lookup: dict[bytes, int] = {}
        for i, v in enumerate(self._vocab):
            lookup.setdefault(v, i)
        self._lookup = lookup

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int | None = None) -> Llama2cTokenizer:
        """Reads ``tokenizer.bin``: int32 max_token_length, then per token float32 score, int32 length, bytes.

        ``vocab_size`` comes from the model's config in llama2.c; None reads entries until the end of the file.
        """
        path = Path(path)
        data = path.read_bytes()
        if len(data) < 4:
            raise FormatError(f"{path}: too short for a llama2.c tokenizer")
        (max_len,) = struct.unpack_from("<i", data, 0)
        off = 4
        vocab: list[bytes] = []
        scores: list[float] = []
        while (vocab_size is None and off < len(data)) or (vocab_size is not None and len(vocab) < vocab_size):
            if off + 8 > len(data):
                raise FormatError(f"{path}: truncated at token {len(vocab)}")
            score, length = struct.unpack_from("<fi", data, off)
            off += 8
            if length < 0 or off + length > len(data):
                raise FormatError(f"{path}: bad length {length} for token {len(vocab)}")
            vocab.append(data[off : off + length])
            scores.append(score)
            off += length
        return cls(vocab, scores, max_len)

    def token_piece(self, token_id: int) -> str:
        return self._vocab[self._check(token_id)].decode("utf-8", errors="replace")

    def is_eog(self, token_id: int) -> bool:
        # run.c stops at BOS ("the BOS token delimits sequences"); EOS ends a sequence too
        return token_id == self.eos_id or token_id == self.bos_id

    def _check(self, token_id: int) -> int:
        return check_id(token_id, self.vocab_size)

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids as run.c's ``encode(text, bos, eos=0)``; ``parse_special`` has no effect here."""
        del parse_special
        if add_bos is None:
            add_bos = self.add_bos
        text = text.split("\0", 1)[0]  # run.c sees a C string
        syms: list[bytes] = []
        ids: list[int | None] = []
        if add_bos:
            syms.append(self._vocab[self.bos_id])
            ids.append(self.bos_id)
        lookup = self._lookup
        if text:
            dummy = lookup.get(b" ")
            if dummy is not None:  # run.c would index with -1 here; a vocabulary without " " gets no prefix
                syms.append(self._vocab[dummy])
                ids.append(dummy)
        for ch in text:
            b = ch.encode("utf-8", errors="surrogatepass")
            tid = lookup.get(b)
            if tid is not None:
                syms.append(self._vocab[tid])
                ids.append(tid)
            else:
                for byte in b:
                    fid = byte + 3
                    if fid >= self.vocab_size:
                        raise FormatError(f"byte-fallback id {fid} is outside the vocabulary")
                    syms.append(self._vocab[fid])
                    ids.append(fid)
        order = merge_pairs(syms, ids, lookup.get, self._scores, -1e10)
        return [ids[i] for i in order]  # type: ignore[misc]

    def _render(self, prev: int | None, token_id: int) -> bytes:
        token_id = self._check(token_id)
        if token_id == self.bos_id or token_id == self.eos_id:
            return b""
        piece = self._vocab[token_id]
        if prev == self.bos_id and piece[:1] == b" ":
            piece = piece[1:]
        m = _L2C_BYTE_PIECE.match(piece)
        if m:
            return bytes((int(m.group(1), 16),))
        return piece

    def decode(self, ids: Iterable[int]) -> str:
        buf = bytearray()
        prev: int | None = None
        for tid in ids:
            tid = int(tid)
            buf += self._render(prev, tid)
            prev = tid
        return buf.decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return ByteStreamDecoder(self._render)
