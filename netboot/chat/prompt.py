"""`ChatFormat`: a conversation -> prompt text -> token ids, for one model; `chat_format` picks it for a model file.

The format is, in this order: the one asked for (`--chat-template`: a built-in name, a jinja file or a jinja text),
the model's own template (GGUF `tokenizer.chat_template`; `chat_template` of a SafeTensors model's
tokenizer_config.json, or its chat_template.jinja), else the built-in format of the model's family (`detect_family`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from netboot.chat.builtin import BUILTINS, END_OF_TURN, detect_family, render_builtin
from netboot.chat.template import ChatTemplateError, JinjaTemplate
from netboot.errors import NetbootError, clipped
from netboot.formats import ModelFile
from netboot.tokenizers.base import Tokenizer

GGUF_KEY = "tokenizer.chat_template"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_TEMPLATE_FILE = "chat_template.jinja"
MAX_TEMPLATE_FILE = 1 << 20  # bytes: real templates are a few kB

Messages = Sequence[Mapping[str, Any]]


class ChatFormat:
    """How one model's conversations become prompts.

    `name`: the built-in's name ("gemma", "llama3", ...) or "jinja"; `origin`: where it came from, for people;
    `stop_token_ids`: the tokens that close a turn in this format (and EOS), which end a reply.
    """

    def __init__(self, name: str, origin: str, renderer: Callable[[Messages, bool], str], tokenizer: Tokenizer,
                 stop_token_ids: frozenset[int]):
        self.name = name
        self.origin = origin
        self.tokenizer = tokenizer
        self.stop_token_ids = stop_token_ids
        self._renderer = renderer

    def __repr__(self) -> str:
        return f"ChatFormat({self.name!r}, {self.origin!r})"

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        """The prompt text of `messages` (a list of {"role", "content"}), with the reply's opening when asked."""
        return self._renderer(messages, add_generation_prompt)

    def encode(self, messages: Messages, add_generation_prompt: bool = True) -> list[int]:
        """The prompt's token ids, with one BOS where the model wants one: the tokenizer adds it, unless the
        template already wrote it (then the written one is parsed and none is added)."""
        text = self.render(messages, add_generation_prompt)
        bos = bos_text(self.tokenizer)
        add_bos = False if bos and text.startswith(bos) else None
        return self.tokenizer.encode(text, add_bos=add_bos, parse_special=True)


def token_id(tokenizer: Tokenizer, text: str) -> int | None:
    """The id of the vocabulary entry `text` when it is one token, else None."""
    lookup = getattr(tokenizer, "token_id", None)
    if callable(lookup):
        return lookup(text)
    ids = tokenizer.encode(text, add_bos=False, parse_special=True)
    return ids[0] if len(ids) == 1 and tokenizer.token_piece(ids[0]) == text else None


def bos_text(tokenizer: Tokenizer) -> str:
    return tokenizer.token_piece(tokenizer.bos_id) if tokenizer.bos_id is not None else ""


def special_tokens(tokenizer: Tokenizer) -> dict[str, str]:
    """The special tokens a jinja template sees, as transformers passes them (only those the model has)."""
    out = {}
    for name, tid in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id)):
        if tid is not None:
            out[name] = tokenizer.token_piece(tid)
    return out


def stop_ids(tokenizer: Tokenizer, markers: Sequence[str]) -> frozenset[int]:
    ids = {token_id(tokenizer, marker) for marker in markers}
    ids.add(tokenizer.eos_id)
    return frozenset(i for i in ids if i is not None)


def builtin_format(name: str, tokenizer: Tokenizer, origin: str = "built-in") -> ChatFormat:
    """The built-in format `name` (one of BUILTINS) over `tokenizer`."""
    if name not in BUILTINS:
        raise NetbootError(f"unknown chat template {clipped(name)} (built-in: {', '.join(BUILTINS)})")

    def render(messages: Messages, add_generation_prompt: bool) -> str:
        return render_builtin(name, messages, add_generation_prompt)

    return ChatFormat(name, origin, render, tokenizer, stop_ids(tokenizer, [END_OF_TURN[name]]))


def jinja_format(source: str, tokenizer: Tokenizer, origin: str) -> ChatFormat:
    """A format rendered by the jinja template `source`; a ChatTemplateError naming `origin` when it does not parse."""
    try:
        template = JinjaTemplate(source, special_tokens(tokenizer))
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"{origin}: {exc}") from None
    markers = [m for m in set(END_OF_TURN.values()) if m in source]
    return ChatFormat("jinja", origin, template.render, tokenizer, stop_ids(tokenizer, sorted(markers)))


def from_override(override: str, tokenizer: Tokenizer) -> ChatFormat:
    """`--chat-template VALUE`: a built-in name, a jinja template file, or a jinja template's text."""
    if override in BUILTINS:
        return builtin_format(override, tokenizer, "built-in, as asked")
    path = _as_file(override)
    if path is not None:
        return jinja_format(_read_template(path), tokenizer, str(path))
    if "{{" in override or "{%" in override:
        return jinja_format(override, tokenizer, "the chat template given")
    raise NetbootError(
        f"unknown chat template {clipped(override)}: expected a built-in name ({', '.join(BUILTINS)}), "
        "a jinja template file, or a jinja template's text"
    )


def _as_file(value: str) -> Path | None:
    try:
        path = Path(value).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):  # a template's text is no file name: too long, a NUL byte
        return None


def _read_template(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_TEMPLATE_FILE:
            raise NetbootError(f"{path}: over {MAX_TEMPLATE_FILE >> 20} MB, too large for a chat template")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetbootError(f"{path}: cannot read the chat template ({clipped(str(exc), 120)})") from None


def model_template(file: ModelFile) -> tuple[str, str] | None:
    """(template, where it was found) of the model's own jinja template; None when it has none."""
    if file.format == "gguf":
        source = file.metadata.get(GGUF_KEY)
        return _checked(source, f"{file.path}: {GGUF_KEY}") if source is not None else None
    if file.format == "safetensors":
        return _hf_template(file.path if file.path.is_dir() else file.path.parent)
    return None


def _checked(source: Any, where: str) -> tuple[str, str]:
    if not isinstance(source, str):
        raise ChatTemplateError(f"{where} is a {type(source).__name__}, not a template's text")
    return source, where


def _hf_template(directory: Path) -> tuple[str, str] | None:
    config_path = directory / HF_TOKENIZER_CONFIG
    if config_path.is_file():
        found = _template_in_config(config_path)
        if found is not None:
            return found
    jinja_path = directory / HF_TEMPLATE_FILE
    return (_read_template(jinja_path), str(jinja_path)) if jinja_path.is_file() else None


def _template_in_config(path: Path) -> tuple[str, str] | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise NetbootError(f"{path}: cannot read JSON ({clipped(str(exc), 120)})") from None
    source = config.get("chat_template") if isinstance(config, dict) else None
    where = f"{path}: chat_template"
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    return _checked(source, where) if source is not None else None


def chat_format(file: ModelFile, tokenizer: Tokenizer | None = None, override: str | None = None) -> ChatFormat:
    """The chat format for a model: `override` when given, else the model's own template, else its family's
    built-in one. `tokenizer` defaults to the model's."""
    tokenizer = file.tokenizer if tokenizer is None else tokenizer
    if override is not None:
        return from_override(override, tokenizer)
    own = model_template(file)
    if own is not None:
        return jinja_format(own[0], tokenizer, own[1])
    name, why = detect_family(file.config.arch, lambda text: token_id(tokenizer, text) is not None)
    return builtin_format(name, tokenizer, f"built-in ({why}; the model carries no chat template)")
