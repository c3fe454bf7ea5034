"""llama.cpp's SPM tokenizer over a GGUF SentencePiece-style vocabulary (``tokenizer.ggml.model == "llama"``)."""

from __future__ import annotations

import array
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from netboot.errors import FormatError, UnsupportedError, clipped
from netboot.tokenizers.base import StreamDecoder, check_id
from netboot.tokenizers.merges import merge_pairs
from netboot.tokenizers.special import (
    BYTE,
    CONTROL,
    NORMAL,
    TYPE_TO_ATTR,
    UNKNOWN,
    USER_DEFINED,
    apply_model_quirks,
    partition,
    resolve_special_ids,
    special_tables,
)
from netboot.tokenizers.streams import ByteStreamDecoder
from netboot.tokenizers.vocabulary import Vocabulary

_SPACE_MARK = "\u2581"


class SPMTokenizer:
    """llama.cpp's SPM tokenizer over a GGUF vocabulary (tokens, scores, token types), token for token:

    * the text is first partitioned on special tokens, longest text first: USER_DEFINED tokens always, CONTROL and
      UNKNOWN tokens only when ``parse_special`` is true;
    * each remaining text fragment gets a space prefix (if ``add_space_prefix`` and it follows BOS or a special
      token), spaces become U+2581, and it is split into characters;
    * the adjacent pair whose concatenation is a vocabulary entry with the highest score is merged, ties going to
      the leftmost pair, until no pair is in the vocabulary;
    * a final symbol that is not a token is emitted as ``<0xXX>`` byte tokens, one per UTF-8 byte.

    Decoding renders NORMAL tokens with U+2581 turned back into spaces, USER_DEFINED tokens verbatim, BYTE tokens
    as their byte, and CONTROL, UNKNOWN and UNUSED tokens as nothing (llama.cpp's detokenize with
    ``special=False``); the bytes are joined and decoded as UTF-8 once, at the end, with invalid sequences replaced.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        scores: Sequence[float] | np.ndarray | None = None,
        token_types: Sequence[int] | np.ndarray | None = None,
        *,
        bos_id: int | None = 1,
        eos_id: int | None = 2,
        unk_id: int | None = 0,
        eot_id: int | None = None,
        eom_id: int | None = None,
        add_bos: bool = True,
        add_eos: bool = False,
        add_space_prefix: bool = True,
        model_name: str = "",
        special_ids: Mapping[str, int | None] | None = None,
    ):
        tokens = Vocabulary.from_texts(tokens)
        n = len(tokens)
        if n == 0:
            raise FormatError("tokenizer vocabulary is empty")
        self._tokens = tokens
        self.vocab_size = n
        self._scores = _scores(scores, n)
        attrs = _attributes(token_types, n)

        self.bos_id = bos_id
        self.eos_id = eos_id
        self.unk_id = unk_id
        self.add_bos = bool(add_bos)
        self.add_eos = bool(add_eos)
        self.add_space_prefix = bool(add_space_prefix)
        if self.add_bos and bos_id is None:
            raise FormatError("tokenizer asks for a BOS token but defines none")

        ids = {"eot": eot_id, "eom": eom_id, **(dict(special_ids) if special_ids else {})}
        self._eog = resolve_special_ids(tokens, attrs, ids, eos_id)
        self.eot_id = ids.get("eot")
        apply_model_quirks(tokens, attrs, model_name)
        self._attrs = attrs.tobytes()
        self._special_groups = special_tables(tokens, self._attrs)
        self._byte_ids = _byte_ids(tokens)

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> SPMTokenizer:
        """Builds the tokenizer from a GGUF metadata dict (keys exactly as in the file)."""
        model = meta.get("tokenizer.ggml.model")
        if not isinstance(model, str) or model != "llama":
            raise UnsupportedError(
                f"tokenizer model {clipped(model)} is not supported (only 'llama', SentencePiece-style)"
            )
        tokens = meta.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise FormatError("GGUF metadata has no tokenizer.ggml.tokens")
        if not isinstance(tokens, Sequence) or isinstance(tokens, str) or (
            isinstance(tokens, list) and not all(isinstance(t, str) for t in tokens)
        ):
            raise FormatError(f"GGUF tokenizer.ggml.tokens is not an array of strings: {clipped(tokens)}")
        n = len(tokens)
        p = "tokenizer.ggml."
        _check_numbers(meta, p + "scores", "fiu")
        _check_numbers(meta, p + "token_type", "iu")
        special_ids = {
            kind: _meta_id(meta, f"{p}{kind}_token_id", None, n)
            for kind in ("fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")
        }
        for kind, old in (("fim_pre", "prefix"), ("fim_suf", "suffix"), ("fim_mid", "middle")):
            if special_ids[kind] is None:
                special_ids[kind] = _meta_id(meta, f"{p}{old}_token_id", None, n)
        return cls(
            tokens,
            meta.get(p + "scores"),
            meta.get(p + "token_type"),
            bos_id=_meta_id(meta, p + "bos_token_id", 1, n),
            eos_id=_meta_id(meta, p + "eos_token_id", 2, n),
            unk_id=_meta_id(meta, p + "unknown_token_id", 0, n),
            eot_id=_meta_id(meta, p + "eot_token_id", None, n),
            eom_id=_meta_id(meta, p + "eom_token_id", None, n),
            add_bos=_flag(meta, p + "add_bos_token", True),
            add_eos=_flag(meta, p + "add_eos_token", False),
            add_space_prefix=_flag(meta, p + "add_space_prefix", True),
            model_name=str(meta.get("general.name", "")),
            special_ids=special_ids,
        )

    # -- vocabulary ------------------------------------------------------------------------------------------

    def token_piece(self, token_id: int) -> str:
        return self._tokens[self._check(token_id)]

    def token_id(self, piece: str) -> int | None:
        """The id of a vocabulary entry, or None."""
        return self._tokens.get(piece)

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    @property
    def eog_ids(self) -> frozenset[int]:
        return self._eog

    def is_control(self, token_id: int) -> bool:
        return bool(self._attrs[self._check(token_id)] & (CONTROL | UNKNOWN))

    def _check(self, token_id: int) -> int:
        return check_id(token_id, self.vocab_size)

    # -- encoding --------------------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``, as llama.cpp's ``llama_tokenize``.

        ``add_bos=None`` follows the model (``tokenizer.ggml.add_bos_token``; also appends EOS when
        ``tokenizer.ggml.add_eos_token`` says so, as llama.cpp's ``add_special`` does); ``True`` forces BOS,
        ``False`` adds neither BOS nor EOS. ``parse_special`` turns the text of CONTROL tokens (``<eos>``,
        ``<start_of_turn>``) into those tokens; USER_DEFINED tokens are always recognised.
        """
        out: list[int] = []
        add_special = add_bos is not False
        if add_bos is None:
            add_bos = self.add_bos
        if add_bos:
            if self.bos_id is None:
                raise ValueError("this tokenizer has no BOS token")
            out.append(self.bos_id)
        prev_special = True
        for frag in self._partition(text, parse_special) if text else ():
            if type(frag) is int:
                out.append(frag)
                prev_special = True
            else:
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                self._encode_fragment(frag.replace(" ", _SPACE_MARK), out)
                prev_special = False
        if add_special and self.add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        return partition(text, self._special_groups[0 if parse_special else 1])

    def _encode_fragment(self, text: str, out: list[int]) -> None:
        syms = list(text)
        ids: list[int | None] = [None] * len(syms)
        order = merge_pairs(syms, ids, self._tokens.get, self._scores, None)
        get = self._tokens.get
        for i in order:
            tid = ids[i]
            if tid is None:
                tid = get(syms[i])
            if tid is not None:
                out.append(tid)
                continue
            # Not a token: every merged symbol is a token, so this is a single character that is not in the
            # vocabulary (llama.cpp's re-segmentation through the merge history never applies to those).
            for b in syms[i].encode("utf-8"):
                bid = self._byte_ids[b]
                if bid is None:
                    if self.unk_id is None:
                        raise UnsupportedError(f"vocabulary has no byte token for 0x{b:02X} and no <unk>")
                    bid = self.unk_id
                out.append(bid)

    # -- decoding --------------------------------------------------------------------------------------------

    def _piece_bytes(self, token_id: int, special: bool = False) -> bytes:
        attr = self._attrs[self._check(token_id)]
        if attr & (CONTROL | UNKNOWN) and not special:
            return b""
        text = self._tokens[token_id]
        if attr & (CONTROL | UNKNOWN | USER_DEFINED):
            return text.encode("utf-8")
        if attr & NORMAL:
            return text.replace(_SPACE_MARK, " ").encode("utf-8")
        if attr & BYTE:
            try:
                return bytes((int(text[3:5], 16),))
            except ValueError:
                return b""
        return b""  # UNUSED and undefined token types render as nothing

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of ``ids`` as llama.cpp's ``llama_detokenize(remove_special=False, unparse_special=special)``:
        control tokens render as nothing (as their text with ``special=True``), and with ``add_space_prefix``
        the first token loses one leading space."""
        buf = bytearray()
        strip = self.add_space_prefix
        for tid in ids:
            piece = self._piece_bytes(tid, special)
            if strip and piece[:1] == b" ":
                piece = piece[1:]
            strip = False
            buf += piece
        return buf.decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        """Incremental decoder for generated tokens: token pieces as llama.cpp's ``token_to_piece`` gives them
        (no leading-space strip, since a stream usually continues a prompt)."""
        return ByteStreamDecoder(lambda _prev, tid: self._piece_bytes(tid))


def _scores(scores: Sequence[float] | np.ndarray | None, n: int) -> array.array:
    if scores is None:
        return array.array("f", bytes(4 * n))
    sc = np.ascontiguousarray(np.asarray(scores, dtype=np.float32)[:n])
    if sc.shape[0] != n:
        raise FormatError(f"tokenizer has {n} tokens but {sc.shape[0]} scores")
    return array.array("f", sc.tobytes())


def _attributes(token_types: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    if token_types is None:
        return np.full(n, NORMAL, dtype=np.uint8)
    tt = np.asarray(token_types, dtype=np.int64)[:n]
    if tt.shape[0] != n:
        raise FormatError(f"tokenizer has {n} tokens but {tt.shape[0]} token types")
    valid = (tt >= 0) & (tt < len(TYPE_TO_ATTR))
    return np.where(valid, TYPE_TO_ATTR[np.where(valid, tt, 0)], 0).astype(np.uint8)


def _byte_ids(tokens: Vocabulary) -> list[int | None]:
    """Byte fallback: ``<0xXX>``, else the byte itself as a one-character token (llama.cpp's byte_to_token)."""
    byte_ids: list[int | None] = []
    for b in range(256):
        tid = tokens.get(f"<0x{b:02X}>")
        if tid is None and b < 0x80:
            tid = tokens.get(chr(b))
        byte_ids.append(tid)
    return byte_ids


def _meta_id(meta: Mapping[str, Any], key: str, default: int | None, n_tokens: int) -> int | None:
    if default is not None and default >= n_tokens:
        default = None
    value = meta.get(key)
    if value is None:
        return default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise FormatError(f"GGUF {key} must be an integer, not {clipped(value)}")
    value = int(value)
    return value if 0 <= value < n_tokens else default


def _flag(meta: Mapping[str, Any], key: str, default: bool) -> bool:
    value = meta.get(key, default)
    if not isinstance(value, (bool, np.bool_, numbers.Integral)):
        raise FormatError(f"GGUF {key} must be a boolean, not {clipped(value)}")
    return bool(value)


def _check_numbers(meta: Mapping[str, Any], key: str, kinds: str) -> None:
    """A per-token array must be a flat array of numbers (of dtype kinds `kinds`), when present."""
    value = meta.get(key)
    if isinstance(value, list) and all(isinstance(x, numbers.Real) for x in value):
        value = np.asarray(value)  # a list written by hand (tests, tools); GGUF itself gives arrays
    if value is not None and not (isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in kinds):
        raise FormatError(f"GGUF {key} is not an array of numbers: {clipped(value)}")
