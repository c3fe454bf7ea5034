"""Hugging Face ``tokenizer.json`` tokenizers (through the ``tokenizers`` library) behind the common interface."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from netboot.errors import FormatError, UnsupportedError
from netboot.tokenizers.base import StreamDecoder
from netboot.tokenizers.special import EOG_NAMES
from netboot.tokenizers.streams import WindowStreamDecoder


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
        for name in EOG_NAMES:
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
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a Rust panic in the library is a BaseException (pyo3's PanicException)
            raise FormatError(f"{tokenizer_json_path}: cannot load tokenizer.json: {_one_line(exc)}") from exc
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
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the library's errors and panics on a hostile tokenizer.json
            raise FormatError(f"tokenizer.json cannot encode this text: {_one_line(exc)}") from exc
        finally:
            if has_flag:
                tok.encode_special_tokens = previous
        if add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def stream_decoder(self) -> StreamDecoder:
        return WindowStreamDecoder(self.decode)


def _one_line(exc: BaseException) -> str:
    """The library's words about a failure, one line of at most 200 characters."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200] or type(exc).__name__
