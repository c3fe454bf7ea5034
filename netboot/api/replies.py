"""OpenAI's reply objects: chat.completion and text_completion (whole and as stream chunks), usage, and logprobs in
both of OpenAI's shapes (chat's per-token objects with bytes; the legacy completions arrays)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netboot.engine.requests import Finished, TokenLogprob

BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class Vocabulary:
    """Token ids as logprobs show them: the text a token adds (a special token: its piece) and its bytes."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def show(self, token: int) -> tuple[str, list[int]]:
        if token not in self._cache:
            piece = self.tokenizer.token_piece(token)
            byte = BYTE_PIECE.fullmatch(piece)
            if byte:  # one byte of a character that other tokens complete
                raw = bytes([int(byte.group(1), 16)])
                text = raw.decode("utf-8", errors="replace")
            else:
                text = self.tokenizer.decode([token]) or piece
                raw = text.encode("utf-8")
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[token] = (text, list(raw))
        return self._cache[token]


@dataclass
class Reply:
    """What one reply (chat or completion) is: its id, time, model, and the choices' state while it is built."""

    kind: str  # "chat" | "completion"
    model: str
    n: int
    id: str = ""
    created: int = 0
    texts: list[list[str]] = field(default_factory=list)
    logprobs: list[list[TokenLogprob]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # text so far per choice, for text_offset
    finished: list[Finished | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
        self.id = f"{prefix}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.texts = [[] for _ in range(self.n)]
        self.logprobs = [[] for _ in range(self.n)]
        self.offsets = [0] * self.n
        self.finished = [None] * self.n

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    def head(self, chunk: bool = False) -> dict[str, Any]:
        kind = "chat.completion.chunk" if chunk and self.kind == "chat" else self.object
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}


def usage(prompt_tokens: int, finished: Sequence[Finished | None]) -> dict[str, Any]:
    """Prompt tokens count once however many choices (as OpenAI counts them)."""
    done = [f for f in finished if f is not None]
    completion = sum(f.completion_tokens for f in done)
    cached = max((f.cached_tokens for f in done), default=0)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion, "prompt_tokens_details": {"cached_tokens": cached}}


def chat_logprobs(vocab: Vocabulary, steps: Sequence[TokenLogprob]) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        text, raw = vocab.show(token)
        return {"token": text, "logprob": logprob, "bytes": raw}

    return {"content": [{**entry(s.token, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
                        for s in steps], "refusal": None}


def completion_logprobs(vocab: Vocabulary, steps: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy shape; `offset` is where the first of these tokens starts in the reply's text."""
    tokens, offsets = [], []
    for s in steps:
        offsets.append(offset)
        text = vocab.show(s.token)[0]
        tokens.append(text)
        offset += len(text)
    top = [{vocab.show(t)[0]: lp for t, lp in s.top} for s in steps]
    return {"tokens": tokens, "token_logprobs": [s.logprob for s in steps], "top_logprobs": top,
            "text_offset": offsets}


def logprobs_of(reply: Reply, vocab: Vocabulary, i: int, steps: Sequence[TokenLogprob]) -> dict[str, Any]:
    if reply.kind == "chat":
        return chat_logprobs(vocab, steps)
    shown = completion_logprobs(vocab, steps, reply.offsets[i])
    reply.offsets[i] += sum(len(t) for t in shown["tokens"])
    return shown


def whole(reply: Reply, prompt_tokens: int, vocab: Vocabulary | None) -> dict[str, Any]:
    """The non-streaming reply."""
    choices = []
    for i in range(reply.n):
        done = reply.finished[i]
        text = "".join(reply.texts[i])
        logprobs = logprobs_of(reply, vocab, i, reply.logprobs[i]) if vocab is not None else None
        choice: dict[str, Any] = {"index": i}
        if reply.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        choice.update(logprobs=logprobs, finish_reason=done.reason if done else None)
        choices.append(choice)
    return {**reply.head(), "choices": choices, "usage": usage(prompt_tokens, reply.finished)}


def chunk(reply: Reply, i: int, *, text: str | None = None, role: bool = False, finish: str | None = None,
          logprobs: dict[str, Any] | None = None, include_usage: bool = False) -> dict[str, Any]:
    """One streamed chunk of choice i: its opening (chat: the role), a piece of text, or its finish_reason."""
    choice: dict[str, Any] = {"index": i}
    if reply.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    choice.update(logprobs=logprobs, finish_reason=finish)
    out = {**reply.head(chunk=True), "choices": [choice]}
    if include_usage:  # with include_usage every chunk carries "usage": null but the last
        out["usage"] = None
    return out


def usage_chunk(reply: Reply, prompt_tokens: int) -> dict[str, Any]:
    return {**reply.head(chunk=True), "choices": [], "usage": usage(prompt_tokens, reply.finished)}
