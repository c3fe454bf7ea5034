"""Built-in chat formats for models that carry no template, producing the text llama.cpp's `llama_chat_apply_template`
produces for the same names (gemma, llama2, llama2-sys, llama3, chatml), and the detection of a model's family.

As in llama.cpp, the text holds no BOS: the tokenizer adds it. Contents are trimmed where llama.cpp trims them
(Gemma, Llama 3), with C's `isspace` (ASCII whitespace only). Roles are system, user and assistant; any other is
refused, since each format would render it differently (or not at all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from netboot.chat.template import ConversationRejected, check_messages

ROLES = ("system", "user", "assistant")
_C_SPACE = " \t\n\v\f\r"

Renderer = Callable[[Sequence[Mapping[str, str]], bool], str]


def _trim(text: str) -> str:
    return text.strip(_C_SPACE)


def _chatml(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
    turns = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(turns) + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _llama3(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
    turns = [f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{_trim(m['content'])}<|eot_id|>" for m in messages]
    prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else ""
    return "".join(turns) + prompt


def _gemma(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
    # Gemma has no system turn: system text waits for the next user turn and opens it, followed by a blank line
    parts, system = [], ""
    for m in messages:
        if m["role"] == "system":
            system += _trim(m["content"])
            continue
        role = "model" if m["role"] == "assistant" else m["role"]
        parts.append(f"<start_of_turn>{role}\n")
        if system and role != "model":
            parts.append(system + "\n\n")
            system = ""
        parts.append(_trim(m["content"]) + "<end_of_turn>\n")
    if add_generation_prompt:
        parts.append("<start_of_turn>model\n")
    return "".join(parts)


def _llama2(with_system: bool) -> Renderer:
    def render(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        # a user turn ends with " [/INST]", which already prompts the reply: there is no separate generation prompt
        parts, in_turn = ["[INST] "], True
        for m in messages:
            if not in_turn:
                parts.append("[INST] ")
                in_turn = True
            if m["role"] == "system":
                parts.append(f"<<SYS>>\n{m['content']}\n<</SYS>>\n\n" if with_system else m["content"] + "\n")
            elif m["role"] == "user":
                parts.append(m["content"] + " [/INST]")
            else:
                parts.append(m["content"] + "</s>")
                in_turn = False
        return "".join(parts)

    return render


BUILTINS: dict[str, Renderer] = {
    "gemma": _gemma,
    "llama2": _llama2(with_system=False),
    "llama2-sys": _llama2(with_system=True),
    "llama3": _llama3,
    "chatml": _chatml,
}
# the token that closes a turn in each format: generation stops on it
END_OF_TURN = {
    "gemma": "<end_of_turn>", "llama2": "</s>", "llama2-sys": "</s>", "llama3": "<|eot_id|>", "chatml": "<|im_end|>",
}
# the token that marks a family in a vocabulary, most specific first
MARKERS = (
    ("<start_of_turn>", "gemma"), ("<|start_header_id|>", "llama3"), ("<|im_start|>", "chatml"),
    ("[INST]", "llama2-sys"),
)
FALLBACK = "chatml"  # what llama.cpp uses for a model whose format it cannot tell


def check_builtin_messages(name: str, messages: Any) -> list[dict[str, Any]]:
    """The conversation with every role one of ROLES and every content a string."""
    chat = check_messages(messages)
    for i, m in enumerate(chat):
        if m["role"] not in ROLES:
            raise ConversationRejected(
                f"message {i} has role {m['role']!r}: the {name} chat format knows system, user and assistant"
            )
        if not isinstance(m.get("content"), str):
            raise ConversationRejected(f"message {i} has no text content (the {name} chat format takes a string)")
    return chat


def render_builtin(name: str, messages: Any, add_generation_prompt: bool = True) -> str:
    """The prompt text of the built-in format `name` (one of BUILTINS) for `messages`."""
    return BUILTINS[name](check_builtin_messages(name, messages), bool(add_generation_prompt))


def detect_family(architecture: str | None, has_token: Callable[[str], bool]) -> tuple[str, str]:
    """(built-in name, why) for a model without a template: the marker tokens of its vocabulary first, then its
    architecture, else ChatML."""
    for token, name in MARKERS:
        if has_token(token):
            return name, f"its vocabulary has {token}"
    arch = (architecture or "").lower()
    if arch.startswith("gemma"):
        return "gemma", f"its architecture is {arch}"
    if arch == "llama":
        return "llama2-sys", "its architecture is llama without Llama 3's or ChatML's tokens"
    return FALLBACK, "no family recognised"
