"""Jinja chat templates, rendered as transformers' `apply_chat_template` renders them.

The environment is jinja2's immutable sandbox with `trim_blocks` and `lstrip_blocks`, the `loopcontrols`
extension, a `{% generation %}` tag that renders its body, the globals `raise_exception` and `strftime_now`, a
`namespace` that refuses underscore names, and a `tojson` filter that is plain `json.dumps` (jinja's own escapes
HTML characters, which would change the prompt). The template sees `messages`, `add_generation_prompt`,
`tools` and `documents` (None) and the special tokens it is given (`bos_token`, `eos_token`, ...).

A template that does not parse, fails while rendering, or refuses the conversation (`raise_exception`) ends in a
one-line `ChatTemplateError`, never a jinja traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from netboot.errors import ChatTemplateError, ConversationRejected, clipped

MESSAGE_LIMIT = 200  # characters of a template's own error text a message shows


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` on one line (whitespace runs become one space), cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers marks assistant text with it): renders the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: Any) -> None:
    raise ConversationRejected(f"the chat template refuses the conversation: {one_line(message)}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _check_name(name: Any) -> None:
    # an underscore attribute on a namespace is the first step of every known sandbox escape
    if isinstance(name, str) and name.startswith("_"):
        raise ChatTemplateError(f"the chat template sets {clipped(name)} on a namespace: underscore names are refused")


class _Namespace(jinja2.utils.Namespace):
    """jinja's `namespace()`, refusing underscore-prefixed names."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja's own signature, so `self=` stays usable
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_name(name)
        super().__setitem__(name, value)


class _DictMaker:
    """`dict(...)` and `dict.fromkeys(...)` for templates, without handing them the `dict` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict:
        return dict.fromkeys(*args)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    env.globals["dict"] = _DictMaker()
    return env


_ENV = _environment()


def compile_template(source: str) -> jinja2.Template:
    """The compiled template; a ChatTemplateError naming the line and the problem when it does not parse."""
    if not isinstance(source, str):
        raise ChatTemplateError(f"a chat template is text, not {type(source).__name__}")
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"the chat template does not parse: line {exc.lineno}: {one_line(exc.message or '')}"
        ) from None
    except jinja2.TemplateError as exc:
        reason = one_line(exc.message or type(exc).__name__)
        raise ChatTemplateError(f"the chat template does not parse: {reason}") from None
    except RecursionError:
        raise ChatTemplateError("the chat template does not parse: it is nested too deeply") from None


def plain(value: Any, where: str) -> Any:
    """`value` rebuilt from JSON types only (str, int, float, bool, None, list, dict): all a template is shown."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {plain(k, where): plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, where) for v in value]
    raise ConversationRejected(f"{where} holds a {type(value).__name__}, which is not JSON data")


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """The conversation as plain dicts, each with a string `role`; a ConversationRejected naming the bad message."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise ConversationRejected(f"a conversation is a list of messages, not {type(messages).__name__}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ConversationRejected(f"message {i} is a {type(message).__name__}, not an object with a role")
        if not isinstance(message.get("role"), str):
            raise ConversationRejected(f"message {i} has no role (a string: system, user or assistant)")
        # transformers drops the keys whose value is None before rendering
        out.append({k: v for k, v in plain(message, f"message {i}").items() if v is not None})
    return out


class JinjaTemplate:
    """A jinja chat template with the special tokens it is rendered with."""

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None):
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self._template = compile_template(source)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text, exactly as transformers' `apply_chat_template(..., tokenize=False)` renders it."""
        chat = check_messages(messages)
        try:
            return self._template.render(
                messages=chat, tools=None, documents=None, add_generation_prompt=bool(add_generation_prompt),
                **self.special_tokens,
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as exc:  # undefined names, sandbox refusals, a filter's misuse
            raise ChatTemplateError(f"the chat template fails: {one_line(exc.message or type(exc).__name__)}") from None
        except RecursionError:
            raise ChatTemplateError("the chat template fails: it recurses too deeply") from None
        except Exception as exc:  # a template is code: a TypeError, a division by zero, ...
            raise ChatTemplateError(f"the chat template fails: {type(exc).__name__}: {one_line(exc)}") from None
