"""llama.cpp's special tokens: token attributes, the texts it recognises special tokens by, the end-of-generation
set, and the partition of a text around special tokens."""

from __future__ import annotations

import numpy as np

from netboot.tokenizers.vocabulary import Vocabulary

# token attributes, as llama.cpp derives them from tokenizer.ggml.token_type (one bit each)
UNKNOWN, UNUSED, NORMAL, CONTROL, USER_DEFINED, BYTE, LSTRIP, RSTRIP = (1 << k for k in range(8))
# GGUF token type (0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) -> attribute
TYPE_TO_ATTR = np.array([0, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE], dtype=np.uint8)
SPECIAL_ATTRS = CONTROL | USER_DEFINED | UNKNOWN
_C_SPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale

# llama.cpp recognises these tokens by their text (llama_vocab::impl::load); a match for an id the metadata
# does not set becomes that id, and the token is made CONTROL.
AUTO_IDS: tuple[tuple[str, tuple[str, ...]], ...] = (
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
EOG_NAMES = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
)
# gpt-oss: always rendered and always parsed
FORCE_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

SpecialEntry = tuple[int, str, int, int]  # (order, text, id, attributes)


class SpecialGroup:
    """Special tokens sharing a first character, for finding which of them occur in a text."""

    __slots__ = ("entries", "by_text", "lengths")

    def __init__(self) -> None:
        self.entries: list[SpecialEntry] = []
        self.by_text: dict[str, SpecialEntry] = {}
        self.lengths: list[int] = []

    def add(self, entry: SpecialEntry) -> None:
        self.entries.append(entry)
        self.by_text[entry[1]] = entry
        if len(entry[1]) not in self.lengths:
            self.lengths.append(len(entry[1]))

    def find_in(self, text: str, ch: str, found: list[SpecialEntry]) -> None:
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


SpecialTable = dict[str, SpecialGroup]  # first character -> the special tokens starting with it


def resolve_special_ids(
    tokens: Vocabulary, attrs: np.ndarray, ids: dict[str, int | None], eos_id: int | None
) -> frozenset[int]:
    """The end-of-generation ids, as llama.cpp's loader finds them.

    Fills in the ids of ``ids`` (kind -> id, e.g. ``"eot"``) that are None from the token texts llama.cpp
    recognises, and updates ``attrs`` as the loader does (tokens found by text become CONTROL).
    """
    get = tokens.get
    for kind, names in AUTO_IDS:
        if ids.get(kind) is not None:
            continue
        found = [get(name) for name in names if get(name) is not None]
        if found:
            ids[kind] = min(found)
            attrs[ids[kind]] |= CONTROL
    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids.get(k) is not None}
    for name in EOG_NAMES:
        tid = get(name)
        if tid is not None:
            eog.add(tid)
            attrs[tid] |= CONTROL
    for name in FORCE_USER_DEFINED:
        tid = get(name)
        if tid is not None:
            attrs[tid] = USER_DEFINED
    for tid in (eos_id, ids.get("eot"), ids.get("eom")):
        if tid is not None:
            eog.add(tid)
    _drop_false_eog(tokens, attrs, eog)
    n = len(tokens)
    return frozenset(t for t in eog if 0 <= t < n)


def _drop_false_eog(tokens: Vocabulary, attrs: np.ndarray, eog: set[int]) -> None:
    # llama.cpp's exceptions: gpt-oss's <|end|> and the </s> of some chat formats do not end generation
    n = len(tokens)
    names_in_eog = {tokens[t]: t for t in eog if 0 <= t < n}
    has_call = "<|call|>" in names_in_eog or "<|calls|>" in names_in_eog
    if "<|end|>" in names_in_eog and has_call and ("<|return|>" in names_in_eog or "<|flush|>" in names_in_eog):
        eog.discard(names_in_eog["<|end|>"])
        attrs[names_in_eog["<|end|>"]] = USER_DEFINED
    if "</s>" in names_in_eog and ("<|tool_response>" in names_in_eog or "<|plamo:eos|>" in names_in_eog):
        eog.discard(names_in_eog["</s>"])
        attrs[names_in_eog["</s>"]] = NORMAL


def apply_model_quirks(tokens: Vocabulary, attrs: np.ndarray, model_name: str) -> None:
    """Per-model attribute changes llama.cpp makes by model name (phi-3: special tokens strip spaces after them)."""
    lname = model_name.lower()
    if "phi-3" not in lname and "phi3" not in lname:
        return
    for tid in np.nonzero(attrs & SPECIAL_ATTRS)[0].tolist():
        attrs[tid] |= RSTRIP
    for name, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
        tid = tokens.get(name)
        if tid is not None:
            attrs[tid] = (attrs[tid] | RSTRIP) if on else (attrs[tid] & (0xFF ^ RSTRIP))


def special_tables(tokens: Vocabulary, attrs: bytes) -> tuple[SpecialTable, SpecialTable]:
    """The partition tables, in llama.cpp's order (longest text in bytes first): all special tokens, and those
    without CONTROL and UNKNOWN ones (the text of those is only parsed on request)."""
    special = np.nonzero(np.frombuffer(attrs, dtype=np.uint8) & SPECIAL_ATTRS)[0]
    texts = {t: tokens[t] for t in special.tolist()}
    entries = sorted((-len(text.encode("utf-8")), t) for t, text in texts.items())
    tables: tuple[SpecialTable, SpecialTable] = ({}, {})
    for order, (_, tid) in enumerate(entries):
        text, attr = texts[tid], attrs[tid]
        entry = (order, text, tid, attr)
        for table in tables[:1] if attr & (CONTROL | UNKNOWN) else tables:
            table.setdefault(text[0], SpecialGroup()).add(entry)
    return tables


def partition(text: str, table: SpecialTable) -> list[str | int]:
    """Splits ``text`` around the special tokens of ``table``: each special token in turn (longest first) is cut
    out of every text fragment left, at each non-overlapping occurrence from the left."""
    found: list[SpecialEntry] = []
    for ch in set(text):
        group = table.get(ch)
        if group is not None:
            group.find_in(text, ch, found)
    frags: list[str | int] = [text]
    found.sort()
    for _, tok_text, tid, attr in found:
        frags = _cut(frags, tok_text, tid, attr)
    return frags


def _cut(frags: list[str | int], tok_text: str, tid: int, attr: int) -> list[str | int]:
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
            if attr & LSTRIP:
                left = left.rstrip(_C_SPACE)
            if left:
                new.append(left)
            new.append(tid)
            start = m + step
            if attr & RSTRIP:
                while start < end and frag[start] in _C_SPACE:
                    start += 1
            if start >= end:
                break
        if start < end:
            new.append(frag[start:])
    return new
