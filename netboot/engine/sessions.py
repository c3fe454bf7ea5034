"""The engine's KV caches within a byte budget: those of running sequences, sized to what each may reach, and idle
ones kept after a reply so that the next chat turn, whose prompt starts with the same tokens, feeds only its new
ones (every layer keeps every position, so sliding-window layers resume as well as the others)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count

from netboot.model.kv_cache import KVCache
from netboot.model.transformer import Model


@dataclass
class Session:
    """A KV cache and the tokens whose keys and values it holds (positions 0..len(tokens)-1)."""

    cache: KVCache
    tokens: list[int] = field(default_factory=list)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class SessionPool:
    """Hands out KV caches for new sequences, reusing the idle one that shares the longest prefix with the prompt;
    keeps finished ones until their memory is needed (least recently used go first)."""

    def __init__(self, model: Model, budget: int):
        self.model = model
        self.budget = budget
        self.per_position = KVCache.bytes_per_position(model.config)
        self.live = 0  # bytes held by running sequences' caches
        self._idle: OrderedDict[int, Session] = OrderedDict()
        self._ids = count()

    @property
    def idle_bytes(self) -> int:
        return sum(s.cache.nbytes for s in self._idle.values())

    @property
    def used(self) -> int:
        return self.live + self.idle_bytes

    @property
    def idle_sessions(self) -> int:
        return len(self._idle)

    def fits_ever(self, positions: int) -> bool:
        return positions * self.per_position <= self.budget

    def acquire(self, prompt: list[int], positions: int) -> tuple[Session, int] | None:
        """A session for a sequence of up to `positions` tokens starting with `prompt`, and how many of the prompt's
        tokens it already holds (at most all but the last, whose logits the sequence needs); None when the memory
        is not free now."""
        key, reused = self._best_match(prompt)
        session = self._idle.pop(key) if key is not None else None
        needed = positions * self.per_position - (session.cache.nbytes if session else 0)
        while self.live + self.idle_bytes + max(needed, 0) > self.budget and self._idle:
            self._idle.popitem(last=False)
        if self.live + self.idle_bytes + max(needed, 0) > self.budget:
            if session is not None:
                self._idle[key] = session
            return None
        if session is None:
            session, reused = Session(self.model.new_cache(capacity=positions)), 0
        else:
            session.cache.reserve(positions)
            del session.tokens[reused:]
            session.cache.truncate(reused)
        self.live += session.cache.nbytes
        return session, reused

    def release(self, session: Session, keep: bool) -> None:
        """A sequence is done with its session: keep it for a next turn, or free it."""
        self.live -= session.cache.nbytes
        if keep and session.tokens:
            self._idle[next(self._ids)] = session

    def _best_match(self, prompt: list[int]) -> tuple[int | None, int]:
        """The idle session that shares the longest prefix with `prompt`, when that is at least half of what it
        holds: taking one for a short match (a shared BOS, a system prompt) would throw away a conversation its
        own client is about to continue, to save little."""
        best, length = None, 0
        for key, session in self._idle.items():
            n = min(common_prefix(session.tokens, prompt), len(prompt) - 1)
            if n > length and 2 * n >= len(session.tokens):
                best, length = key, n
        return best, length
