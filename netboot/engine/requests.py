"""What a client hands the engine (`Request`) and what it gets back: a `Handle` that yields `Delta`s as tokens are
generated and one `Finished` at the end, to a thread (iterate it) or to an asyncio task (`async for`)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from netboot.engine.sampling import SamplingParams


@dataclass
class Request:
    prompt_ids: list[int]
    max_tokens: int = 128
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    stop_token_ids: frozenset[int] = frozenset()  # ends the reply besides the tokenizer's end-of-generation ids
    logprobs: int | None = None  # None: none; k: the chosen token's log-probability and the k most likely


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # the most likely tokens at this step with their log-probabilities


@dataclass(frozen=True)
class Delta:
    """New text of a reply (possibly empty while a stop string may be forming) and the tokens that made it."""

    text: str
    tokens: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The end of a reply. `reason` is OpenAI's finish_reason ("stop": end of turn or stop string, "length": the
    max_tokens or the context) or "cancelled" / "error"; `detail` says which ("eos", "stop", "max_tokens",
    "context", or the error's message)."""

    reason: str
    detail: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose keys and values were reused from an earlier turn
    queued_seconds: float = 0.0
    first_token_seconds: float = 0.0  # from submission to the first token
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def decode_tps(self) -> float:
        steps = max(self.completion_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0

    @property
    def prefill_tps(self) -> float:
        fed = self.prompt_tokens - self.cached_tokens
        return fed / self.prefill_seconds if self.prefill_seconds else 0.0


Event = Delta | Finished


class Handle:
    """A submitted request's events, delivered by the engine's thread. Iterate it from a thread, or `async for` it
    when it was submitted from an event loop; `cancel()` stops the reply at the engine's next step."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop | None = None):
        self.request = request
        self.cancelled = threading.Event()
        self.finished: Finished | None = None
        self._loop = loop
        self._async: asyncio.Queue[Event] | None = asyncio.Queue() if loop is not None else None
        self._sync: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, event: Event) -> None:
        """Called by the engine's thread."""
        if isinstance(event, Finished):
            self.finished = event
        if self._async is not None:
            try:
                self._loop.call_soon_threadsafe(self._async.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody listens any more
                self.cancel()
        else:
            self._sync.put(event)

    def __iter__(self) -> Iterator[Event]:
        if self._async is not None:
            raise RuntimeError("this request was submitted from an event loop: use `async for`")
        while True:
            event = self._sync.get()
            yield event
            if isinstance(event, Finished):
                return

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._async is None:
            raise RuntimeError("this request was submitted without an event loop: iterate it from a thread")
        while True:
            event = await self._async.get()
            yield event
            if isinstance(event, Finished):
                return

    def text(self) -> tuple[str, Finished]:
        """The whole reply, waiting for it (from a thread)."""
        parts = []
        for event in self:
            if isinstance(event, Delta):
                parts.append(event.text)
        assert self.finished is not None
        return "".join(parts), self.finished
