"""Tokenizers: GGUF SentencePiece-style vocabularies, llama2.c ``tokenizer.bin`` and Hugging Face ``tokenizer.json``.

``SPMTokenizer`` reproduces llama.cpp's SPM vocabulary (``tokenizer.ggml.model == "llama"``) token for token:

* the text is first partitioned on special tokens, longest text first: USER_DEFINED tokens always, CONTROL and
  UNKNOWN tokens only when ``parse_special`` is true;
* each remaining text fragment gets a space prefix (if ``add_space_prefix`` and it follows BOS or a special
  token), spaces become U+2581, and it is split into characters;
* the adjacent pair whose concatenation is a vocabulary entry with the highest score is merged, ties going to
  the leftmost pair, until no pair is in the vocabulary;
* a final symbol that is not a token is emitted as ``<0xXX>`` byte tokens, one per UTF-8 byte.

Decoding renders NORMAL tokens with U+2581 turned back into spaces, USER_DEFINED tokens verbatim, BYTE tokens as
their byte, and CONTROL, UNKNOWN and UNUSED tokens as nothing (llama.cpp's detokenize with ``special=False``);
the bytes are joined and decoded as UTF-8 once, at the end, with invalid sequences replaced.

Every tokenizer here offers the ``Tokenizer`` protocol below.
"""

from __future__ import annotations

import array
import codecs
import heapq
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from netboot.errors import FormatError, UnsupportedError
from netboot.vocabulary import Vocabulary

__all__ = [
    "HFTokenizer",
    "Llama2cTokenizer",
    "SPMTokenizer",
    "StreamDecoder",
    "Tokenizer",
]


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


class _ByteStreamDecoder:
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


def _merge_pairs(
    syms: list[Any],
    ids: list[int | None],
    get: Callable[[Any], int | None],
    scores: Sequence[float],
    min_score: float | None,
) -> list[int]:
    """Score-driven pair merging shared by the SPM and llama2.c tokenizers.

    ``syms`` holds the initial symbols (str or bytes), ``ids`` their token ids where known. Repeatedly merges the
    adjacent pair whose concatenation ``get`` finds (its token id) with the highest score (ties: leftmost pair), only
    considering scores above ``min_score`` when it is given; a priority queue makes this O(n log n) rather than
    a rescan per merge, with the same result. Updates ``syms``/``ids`` in place (a symbol merged into its left
    neighbour becomes None) and returns the indices of the surviving symbols in order.
    """
    n = len(syms)
    if n < 2:
        return list(range(n))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap: list[tuple[float, int, int, int, int]] = []
    for i in range(n - 1):
        s = syms[i] + syms[i + 1]
        tid = get(s)
        if tid is not None:
            sc = scores[tid]
            if min_score is None or sc > min_score:
                heap.append((-sc, i, i + 1, len(s), tid))
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, left, right, size, tid = pop(heap)
        sl, sr = syms[left], syms[right]
        # stale entry: one side was merged away, or grew, since the pair was queued
        if sl is None or sr is None or len(sl) + len(sr) != size:
            continue
        merged = sl + sr
        syms[left] = merged
        syms[right] = None
        ids[left] = tid
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prv[after] = left
        before = prv[left]
        if before >= 0:
            s = syms[before] + merged
            t = get(s)
            if t is not None:
                sc = scores[t]
                if min_score is None or sc > min_score:
                    push(heap, (-sc, before, left, len(s), t))
        if after >= 0:
            s = merged + syms[after]
            t = get(s)
            if t is not None:
                sc = scores[t]
                if min_score is None or sc > min_score:
                    push(heap, (-sc, left, after, len(s), t))
    order = []
    i = 0
    while i != -1:
        order.append(i)
        i = nxt[i]
    return order


# ---------------------------------------------------------------------------------------------------------------
# GGUF SentencePiece-style vocabulary (llama.cpp's SPM)
# ---------------------------------------------------------------------------------------------------------------

# token attributes, as llama.cpp derives them from tokenizer.ggml.token_type (one bit each)
_UNKNOWN, _UNUSED, _NORMAL, _CONTROL, _USER_DEFINED, _BYTE, _LSTRIP, _RSTRIP = (1 << k for k in range(8))
# GGUF token type (0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) -> attribute
_TYPE_TO_ATTR = np.array([0, _NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE], dtype=np.uint8)
_SPECIAL_ATTRS = _CONTROL | _USER_DEFINED | _UNKNOWN
_C_SPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale
_SPACE_MARK = "\u2581"

# llama.cpp recognises these tokens by their text (llama_vocab::impl::load); a match for an id the metadata
# does not set becomes that id, and the token is made CONTROL.
_AUTO_IDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("eot", ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
             "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")),
    ("eom", ("<|eom_id|>",)),
    ("fim_pre", ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                 "<|code_prefix|>", "<|prefix|>")),
    ("fim_suf", ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                 "<|code_suffix|>", "<|suffix|>")),
    ("fim_mid", ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                 "<|code_middle|>", "<|middle|>")),
    ("fim_pad", ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")),
    ("fim_rep", ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")),
    ("fim_sep", ("<|file_sep|>",)),
)
# tokens that end generation, by text (llama.cpp's special_eog_ids); they are made CONTROL too
_EOG_NAMES = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
)
# gpt-oss: always rendered and always parsed
_FORCE_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


class _SpecialGroup:
    """Special tokens sharing a first character, for finding which of them occur in a text."""

    __slots__ = ("entries", "by_text", "lengths")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str, int, int]] = []  # (order, text, id, attributes)
        self.by_text: dict[str, tuple[int, str, int, int]] = {}
        self.lengths: list[int] = []

    def add(self, entry: tuple[int, str, int, int]) -> None:
        self.entries.append(entry)
        self.by_text[entry[1]] = entry
        if len(entry[1]) not in self.lengths:
            self.lengths.append(len(entry[1]))

    def find_in(self, text: str, ch: str, found: list[tuple[int, str, int, int]]) -> None:
        n_starts = text.count(ch)
        if n_starts * len(self.lengths) < len(self.entries):
            # few occurrences of the first character: look up the substrings starting at each of them
            by_text, seen = self.by_text, set()
            pos = text.find(ch)
            while pos >= 0:
                for length in self.lengths:
                    entry = by_text.get(text[pos : pos + length])
                    if entry is not None and entry[2] not in seen:
                        seen.add(entry[2])
                        found.append(entry)
                pos = text.find(ch, pos + 1)
        else:
            found.extend(entry for entry in self.entries if entry[1] in text)


def _check_id(token_id: int, vocab_size: int) -> int:
    token_id = int(token_id)
    if not 0 <= token_id < vocab_size:
        raise ValueError(f"token id {token_id} is out of range for a vocabulary of {vocab_size}")
    return token_id


def _meta_id(meta: Mapping[str, Any], key: str, default: int | None, n_tokens: int) -> int | None:
    if default is not None and default >= n_tokens:
        default = None
    value = meta.get(key)
    if value is None:
        return default
    value = int(value)
    return value if 0 <= value < n_tokens else default


class SPMTokenizer:
    """llama.cpp's SPM tokenizer over a GGUF vocabulary (tokens, scores, token types)."""

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

        if scores is None:
            self._scores = array.array("f", bytes(4 * n))
        else:
            sc = np.ascontiguousarray(np.asarray(scores, dtype=np.float32)[:n])
            if sc.shape[0] != n:
                raise FormatError(f"tokenizer has {n} tokens but {sc.shape[0]} scores")
            self._scores = array.array("f", sc.tobytes())

        if token_types is None:
            attrs = np.full(n, _NORMAL, dtype=np.uint8)
        else:
            tt = np.asarray(token_types, dtype=np.int64)[:n]
            if tt.shape[0] != n:
                raise FormatError(f"tokenizer has {n} tokens but {tt.shape[0]} token types")
            valid = (tt >= 0) & (tt < len(_TYPE_TO_ATTR))
            attrs = np.where(valid, _TYPE_TO_ATTR[np.where(valid, tt, 0)], 0).astype(np.uint8)

        self.bos_id = bos_id
        self.eos_id = eos_id
        self.unk_id = unk_id
        self.add_bos = bool(add_bos)
        self.add_eos = bool(add_eos)
        self.add_space_prefix = bool(add_space_prefix)
        if self.add_bos and bos_id is None:
            raise FormatError("tokenizer asks for a BOS token but defines none")

        # special ids recognised by text, then the end-of-generation set, as llama.cpp's loader does
        ids = {"eot": eot_id, "eom": eom_id, **(dict(special_ids) if special_ids else {})}
        get = tokens.get
        for kind, names in _AUTO_IDS:
            if ids.get(kind) is not None:
                continue
            found = [get(name) for name in names if get(name) is not None]
            if found:
                ids[kind] = min(found)
                attrs[ids[kind]] |= _CONTROL
        eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids.get(k) is not None}
        for name in _EOG_NAMES:
            tid = get(name)
            if tid is not None:
                eog.add(tid)
                attrs[tid] |= _CONTROL
        for name in _FORCE_USER_DEFINED:
            tid = get(name)
            if tid is not None:
                attrs[tid] = _USER_DEFINED
        for tid in (eos_id, ids.get("eot"), ids.get("eom")):
            if tid is not None:
                eog.add(tid)
        names_in_eog = {tokens[t]: t for t in eog if 0 <= t < n}
        has_call = "<|call|>" in names_in_eog or "<|calls|>" in names_in_eog
        if "<|end|>" in names_in_eog and has_call and ("<|return|>" in names_in_eog or "<|flush|>" in names_in_eog):
            eog.discard(names_in_eog["<|end|>"])
            attrs[names_in_eog["<|end|>"]] = _USER_DEFINED
        if "</s>" in names_in_eog and ("<|tool_response>" in names_in_eog or "<|plamo:eos|>" in names_in_eog):
            eog.discard(names_in_eog["</s>"])
            attrs[names_in_eog["</s>"]] = _NORMAL
        self.eot_id = ids.get("eot")
        self._eog = frozenset(t for t in eog if 0 <= t < n)

        # special-token partition table, in llama.cpp's order: longest text (in bytes) first
        special = np.nonzero(attrs & _SPECIAL_ATTRS)[0].tolist()
        lname = model_name.lower()
        if "phi-3" in lname or "phi3" in lname:
            for tid in special:
                attrs[tid] |= _RSTRIP
            for name, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                tid = get(name)
                if tid is not None:
                    attrs[tid] = (attrs[tid] | _RSTRIP) if on else (attrs[tid] & (0xFF ^ _RSTRIP))
        self._attrs = attrs.tobytes()
        entries = sorted((-len(tokens[t].encode("utf-8")), t) for t in special)
        # two tables (all special tokens / without CONTROL and UNKNOWN), each grouped by first character
        self._special_groups: tuple[dict[str, _SpecialGroup], dict[str, _SpecialGroup]] = ({}, {})
        for order, (_, tid) in enumerate(entries):
            text, attr = tokens[tid], self._attrs[tid]
            entry = (order, text, tid, attr)
            tables = self._special_groups[:1] if attr & (_CONTROL | _UNKNOWN) else self._special_groups
            for table in tables:
                table.setdefault(text[0], _SpecialGroup()).add(entry)

        # byte fallback: "<0xXX>", else the byte itself as a one-character token (llama.cpp's byte_to_token)
        byte_ids: list[int | None] = []
        for b in range(256):
            tid = get(f"<0x{b:02X}>")
            if tid is None and b < 0x80:
                tid = get(chr(b))
            byte_ids.append(tid)
        self._byte_ids = byte_ids

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> SPMTokenizer:
        """Builds the tokenizer from a GGUF metadata dict (keys exactly as in the file)."""
        model = meta.get("tokenizer.ggml.model")
        if model != "llama":
            raise UnsupportedError(f"tokenizer model {model!r} is not supported (only 'llama', SentencePiece-style)")
        tokens = meta.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise FormatError("GGUF metadata has no tokenizer.ggml.tokens")
        n = len(tokens)
        p = "tokenizer.ggml."
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
            add_bos=bool(meta.get(p + "add_bos_token", True)),
            add_eos=bool(meta.get(p + "add_eos_token", False)),
            add_space_prefix=bool(meta.get(p + "add_space_prefix", True)),
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
        return bool(self._attrs[self._check(token_id)] & (_CONTROL | _UNKNOWN))

    def _check(self, token_id: int) -> int:
        return _check_id(token_id, self.vocab_size)

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
        """Splits ``text`` around special tokens: each special token in turn (longest first) is cut out of
        every text fragment left, at each non-overlapping occurrence from the left."""
        groups = self._special_groups[0 if parse_special else 1]
        found: list[tuple[int, str, int, int]] = []
        for ch in set(text):
            group = groups.get(ch)
            if group is not None:
                group.find_in(text, ch, found)
        frags: list[str | int] = [text]
        if not found:
            return frags
        found.sort()
        for _, tok_text, tid, attr in found:
            new: list[str | int] = []
            step = len(tok_text)
            for frag in frags:
                if type(frag) is not str or tok_text not in frag:
                    new.append(frag)
                    continue
                start, end = 0, len(frag)
                while True:
                    m = frag.find(tok_text, start)
                    if m < 0:
                        break
                    left = frag[start:m]
                    if attr & _LSTRIP:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        new.append(left)
                    new.append(tid)
                    start = m + step
                    if attr & _RSTRIP:
                        while start < end and frag[start] in _C_SPACE:
                            start += 1
                    if start >= end:
                        break
                if start < end:
                    new.append(frag[start:])
            frags = new
        return frags

    def _encode_fragment(self, text: str, out: list[int]) -> None:
        syms = list(text)
        ids: list[int | None] = [None] * len(syms)
        order = _merge_pairs(syms, ids, self._tokens.get, self._scores, None)
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
        if attr & (_CONTROL | _UNKNOWN) and not special:
            return b""
        text = self._tokens[token_id]
        if attr & (_CONTROL | _UNKNOWN | _USER_DEFINED):
            return text.encode("utf-8")
        if attr & _NORMAL:
            return text.replace(_SPACE_MARK, " ").encode("utf-8")
        if attr & _BYTE:
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
        return _ByteStreamDecoder(lambda _prev, tid: self._piece_bytes(tid))


# ---------------------------------------------------------------------------------------------------------------
# llama2.c tokenizer.bin
# ---------------------------------------------------------------------------------------------------------------

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
        return _check_id(token_id, self.vocab_size)

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
        order = _merge_pairs(syms, ids, lookup.get, self._scores, -1e10)
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
        return _ByteStreamDecoder(self._render)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json
# ---------------------------------------------------------------------------------------------------------------


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _int_ids(value: Any) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class _WindowStreamDecoder:
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


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` behind the common interface.

    BOS: when the tokenizer's post-processor adds one (``add_special_tokens=True`` puts a token in front), that is
    what ``add_bos=True`` uses; otherwise ``add_bos_token`` from tokenizer_config.json decides the default and
    the BOS id is prepended by hand.
    """

    def __init__(
        self,
        tokenizer: Any,
        config: Mapping[str, Any] | None = None,
        tokenizer_config: Mapping[str, Any] | None = None,
    ):
        self._tok = tokenizer
        config = config or {}
        tokenizer_config = tokenizer_config or {}
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))

        def resolve(name: str) -> int | None:
            content = _token_content(tokenizer_config.get(f"{name}_token"))
            if content is not None:
                tid = tokenizer.token_to_id(content)
                if tid is not None:
                    return int(tid)
            ids = _int_ids(config.get(f"{name}_token_id"))
            return ids[0] if ids else None

        self.bos_id = resolve("bos")
        self.eos_id = resolve("eos")

        with_special = tokenizer.encode("a", add_special_tokens=True).ids
        plain = tokenizer.encode("a", add_special_tokens=False).ids
        prefix: list[int] = []
        for k in range(len(with_special) - len(plain) + 1):
            if with_special[k : k + len(plain)] == plain:
                prefix = with_special[:k]
                break
        self._post_processor_bos = bool(prefix)
        if prefix and self.bos_id is None:
            self.bos_id = int(prefix[0])
        if self._post_processor_bos:
            self.add_bos = True
        else:
            self.add_bos = bool(tokenizer_config.get("add_bos_token", False)) and self.bos_id is not None

        eog = set(_int_ids(config.get("eos_token_id")))
        if self.eos_id is not None:
            eog.add(self.eos_id)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        special_contents = {t.content for t in self._added_tokens() if getattr(t, "special", False)}
        for name in _EOG_NAMES:
            tid = vocab.get(name)
            if tid is not None and name in special_contents:
                eog.add(int(tid))
        self._eog = frozenset(eog)

    def _added_tokens(self) -> list[Any]:
        try:
            return list(self._tok.get_added_tokens_decoder().values())
        except AttributeError:  # older tokenizers
            return []

    @classmethod
    def from_file(
        cls,
        tokenizer_json_path: str | Path,
        config: Mapping[str, Any] | None = None,
        tokenizer_config: Mapping[str, Any] | None = None,
    ) -> HFTokenizer:
        try:
            from tokenizers import Tokenizer as _HFTok
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise UnsupportedError("the 'tokenizers' package is needed for tokenizer.json") from exc
        try:
            tok = _HFTok.from_file(str(tokenizer_json_path))
        except Exception as exc:
            raise FormatError(f"{tokenizer_json_path}: cannot load tokenizer.json: {exc}") from exc
        return cls(tok, config, tokenizer_config)

    def token_piece(self, token_id: int) -> str:
        piece = self._tok.id_to_token(int(token_id))
        if piece is None:
            raise ValueError(f"token id {token_id} is out of range for a vocabulary of {self.vocab_size}")
        return piece

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids; ``parse_special=False`` leaves the text of special added tokens as plain text
        (non-special added tokens are always recognised, like llama.cpp's USER_DEFINED tokens)."""
        if add_bos is None:
            add_bos = self.add_bos
        tok = self._tok
        has_flag = hasattr(tok, "encode_special_tokens")
        previous = tok.encode_special_tokens if has_flag else None
        if has_flag:
            tok.encode_special_tokens = not parse_special
        try:
            if add_bos and self._post_processor_bos:
                return list(tok.encode(text, add_special_tokens=True).ids)
            ids = list(tok.encode(text, add_special_tokens=False).ids)
        finally:
            if has_flag:
                tok.encode_special_tokens = previous
        if add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def stream_decoder(self) -> StreamDecoder:
        return _WindowStreamDecoder(self.decode)
