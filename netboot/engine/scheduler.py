"""The serving engine: one model, many sequences, continuous batching.

A thread owns the model. Each step it admits waiting requests (as many as `parallel` and the KV budget allow),
then runs one forward pass over every running sequence: one token for each that is decoding, and a chunk of the
prompt of those still prefilling (a long prompt goes in over several steps, so the others keep decoding). A
weight's bytes are read once per step for the whole batch. Requests join and leave between steps; a cancelled one
leaves at the next step and frees its slot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from netboot.config import PREFILL_BATCH
from netboot.engine.requests import Delta, Finished, Handle, Request, TokenLogprob
from netboot.engine.sampling import Sampler, log_probabilities
from netboot.engine.sessions import Session, SessionPool
from netboot.engine.stops import StopMatcher
from netboot.errors import CapacityError, ContextLimitError, NetbootError, RequestError
from netboot.model.kv_cache import KVCache
from netboot.model.layer import Span
from netboot.model.transformer import Model

# Prompt tokens fed per step while other sequences are decoding: each such step delays their next token by the
# chunk's prefill time (~0.1 s for 64 tokens of the default model on 2 cores).
SHARED_PREFILL_CHUNK = 64
MAX_QUEUE = 256


@dataclass
class _Sequence:
    handle: Handle
    sampler: Sampler
    session: Session
    pending: list[int]  # tokens to feed next: the prompt's unfed part, then the last sampled token
    cached: int  # prompt tokens reused from an idle session
    submitted: float
    admitted: float = 0.0
    first_token: float = 0.0
    generated: list[int] = field(default_factory=list)
    stops: StopMatcher | None = None
    decoder: object = None

    @property
    def request(self) -> Request:
        return self.handle.request

    @property
    def position(self) -> int:
        return len(self.session.tokens)


@dataclass
class Counters:
    requests: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    busy_seconds: float = 0.0


class Engine:
    """Runs many requests on one model. `submit()` from any thread (or from an event loop, passing it) returns a
    `Handle` to read the reply from; `close()` stops the engine, ending what runs with "cancelled"."""

    def __init__(self, model: Model, tokenizer, *, parallel: int = 4, context: int | None = None,
                 kv_budget: int | None = None, max_queue: int = MAX_QUEUE):
        if parallel < 1:
            raise NetbootError(f"parallel must be at least 1 (got {parallel})")
        self.model, self.tokenizer = model, tokenizer
        self.parallel = parallel
        self.context = min(context or model.config.context_length, model.config.context_length)
        per_position = KVCache.bytes_per_position(model.config)
        self.pool = SessionPool(model, kv_budget if kv_budget is not None else parallel * self.context * per_position)
        self.max_queue = max_queue
        self.counters = Counters()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._wake = threading.Condition()
        self._closed = False
        self._serving: threading.Thread | None = None  # the thread the engine runs on, once started
        self._stopped = threading.Event()
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)  # (time, tokens generated) per step

    def start(self) -> Engine:
        """Run the engine on a thread of its own."""
        thread = threading.Thread(target=self.serve_forever, name="netboot-engine", daemon=True)
        self._serving = thread
        thread.start()
        return self

    def serve_forever(self) -> None:
        """Run the engine on this thread until `close()`. The thread that computes should be the one that loaded
        the model (`netboot.commands.engine_options.start_engine` does both on one): OpenMP keeps a team of
        threads per thread that starts parallel work, and a second team beside the first's made every step
        2.5x slower on 2 cores (measured)."""
        self._serving = threading.current_thread()
        try:
            self._loop()
        finally:
            self._stopped.set()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._serving is not None and self._serving is not threading.current_thread():
            self._stopped.wait()
        for seq in [*self._waiting, *self._running]:
            self._finish(seq, "cancelled", "engine closed")
        self._waiting.clear()
        self._running.clear()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- submitting

    def check(self, request: Request) -> None:
        """Raise RequestError unless the engine could ever run `request` (it may still have to wait)."""
        n = len(request.prompt_ids)
        if n == 0:
            raise RequestError("the prompt is empty: nothing to continue from")
        vocab = self.model.config.vocab_size
        bad = next((t for t in request.prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise RequestError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")
        if n >= self.context:
            raise ContextLimitError(f"the prompt has {n} tokens; the context holds {self.context}, and at least one "
                                    "must be left to generate")
        if request.max_tokens < 1:
            raise RequestError(f"max_tokens must be at least 1 (got {request.max_tokens})")
        positions = self._positions(request)
        if not self.pool.fits_ever(positions):
            need, have = positions * self.pool.per_position, self.pool.budget
            raise RequestError(f"the request needs {need / 1e6:.1f} MB of KV cache ({positions} positions); the "
                               f"engine's KV budget is {have / 1e6:.1f} MB: ask for fewer tokens")

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        """Queue `request`; its events go to the returned handle (through `loop` when given)."""
        self.check(request)
        handle = Handle(request, loop)
        sampler = Sampler(request.params)
        for t in request.prompt_ids:
            sampler.accept(t)
        seq = _Sequence(handle, sampler, Session(None), list(request.prompt_ids), 0, time.perf_counter())
        with self._wake:
            if self._closed:
                raise CapacityError("the engine is shutting down", retry_after=5)
            if len(self._waiting) >= self.max_queue:
                raise CapacityError(f"{len(self._waiting)} requests are waiting already", retry_after=2)
            self._waiting.append(seq)
            self.counters.requests += 1
            self._wake.notify()
        return handle

    def _positions(self, request: Request) -> int:
        return min(len(request.prompt_ids) + request.max_tokens, self.context)

    # ---- the loop

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._running:
                    self._wake.wait()
                if self._closed:
                    return
                self._drop_cancelled()
                self._admit()
            if self._running:
                self._step()

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._waiting if s.handle.cancelled.is_set()]:
            self._waiting.remove(seq)
            self._finish(seq, "cancelled", "cancelled while waiting")
        for seq in [s for s in self._running if s.handle.cancelled.is_set()]:
            self._end(seq, "cancelled", "cancelled")

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.parallel:
            seq = self._waiting[0]
            got = self.pool.acquire(seq.request.prompt_ids, self._positions(seq.request))
            if got is None:
                return  # waits for memory: a running sequence will free some
            self._waiting.popleft()
            seq.session, seq.cached = got
            seq.pending = list(seq.request.prompt_ids[seq.cached :])
            seq.admitted = time.perf_counter()
            seq.stops = StopMatcher(seq.request.stop)
            seq.decoder = self.tokenizer.stream_decoder()
            self._running.append(seq)

    def _step(self) -> None:
        started = time.perf_counter()
        batch = self._batch()
        spans, tokens, lo = [], [], 0
        for seq, chunk in batch:
            spans.append(Span(lo, lo + len(chunk), seq.session.cache, seq.position))
            tokens.extend(chunk)
            lo += len(chunk)
        ready = [i for i, (seq, chunk) in enumerate(batch) if len(chunk) == len(seq.pending)]
        try:
            with self.model.backend.step(len(tokens)):
                h = self.model.run_batch(self.model.embed(np.asarray(tokens)), 0, self.model.config.n_layers, spans)
                logits = self.model.logits(h[[spans[i].hi - 1 for i in ready]]) if ready else None
        except Exception as e:  # noqa: BLE001 - the engine outlives a failed step; its sequences end with the error
            what = str(e) if isinstance(e, NetbootError) else f"{type(e).__name__}: {e}"
            for seq, _ in batch:
                self._end(seq, "error", f"the forward pass failed: {what}")
            return
        for seq, chunk in batch:
            seq.session.tokens.extend(chunk)
            del seq.pending[: len(chunk)]
        generated = 0
        for row, i in enumerate(ready):
            generated += self._advance(batch[i][0], logits[row])
        self.counters.steps += 1
        self.counters.busy_seconds += time.perf_counter() - started
        self._recent.append((time.perf_counter(), generated))

    def _batch(self) -> list[tuple[_Sequence, list[int]]]:
        """Every decoding sequence's next token, then prompt chunks up to the step's prefill budget."""
        decoding = [s for s in self._running if s.generated and len(s.pending) == 1]
        batch = [(s, list(s.pending)) for s in decoding]
        budget = SHARED_PREFILL_CHUNK if decoding else PREFILL_BATCH
        for seq in self._running:
            if budget <= 0:
                break
            if seq in decoding:
                continue
            chunk = seq.pending[:budget]
            batch.append((seq, chunk))
            budget -= len(chunk)
        return batch

    def _advance(self, seq: _Sequence, logits: np.ndarray) -> int:
        """Sample the sequence's next token from its logits; emit it, or end the sequence. Returns tokens made."""
        if not np.isfinite(logits).all():
            self._end(seq, "error", f"the model produced non-finite logits at position {seq.position - 1}: its "
                                    "weights are likely corrupt")
            return 0
        request = seq.request
        token = seq.sampler.sample(logits)
        if not seq.generated:
            seq.first_token = time.perf_counter()
        if self.tokenizer.is_eog(token) or token in request.stop_token_ids:
            self._end(seq, "stop", "eos")
            return 0
        seq.generated.append(token)
        seq.sampler.accept(token)
        self.counters.generated_tokens += 1
        logprobs = ()
        if request.logprobs is not None:
            value, top = log_probabilities(logits, token, request.logprobs)
            logprobs = (TokenLogprob(token, value, tuple(top)),)
        text = seq.stops.push(seq.decoder.push(token))
        seq.handle.emit(Delta(text, (token,), logprobs))
        if seq.stops.hit:
            self._end(seq, "stop", "stop")
        elif len(seq.generated) >= request.max_tokens:
            self._end(seq, "length", "max_tokens")
        elif seq.position + 1 >= self.context:
            self._end(seq, "length", "context")
        else:
            seq.pending = [token]
        return 1

    def _end(self, seq: _Sequence, reason: str, detail: str) -> None:
        """A running sequence is done: flush its held-back text, keep its session for a next turn, report."""
        self._running.remove(seq)
        if reason in ("stop", "length") and not seq.stops.hit:
            tail = seq.stops.push(seq.decoder.flush()) + seq.stops.flush()
            if tail:
                seq.handle.emit(Delta(tail, ()))
        # What the cache holds is valid whatever the reason: positions 0..len(tokens)-1 were all computed.
        self.pool.release(seq.session, keep=reason != "error")
        self._finish(seq, reason, detail)

    def _finish(self, seq: _Sequence, reason: str, detail: str) -> None:
        now = time.perf_counter()
        first = seq.first_token or now
        c = self.counters
        c.finished[reason] = c.finished.get(reason, 0) + 1
        c.prompt_tokens += len(seq.request.prompt_ids)
        c.cached_tokens += seq.cached
        seq.handle.emit(Finished(
            reason, detail, len(seq.request.prompt_ids), len(seq.generated), seq.cached,
            queued_seconds=(seq.admitted or now) - seq.submitted, first_token_seconds=first - seq.submitted,
            prefill_seconds=first - (seq.admitted or now), decode_seconds=now - first if seq.first_token else 0.0))

    # ---- what the engine is doing, for /metrics and /stats

    def snapshot(self) -> dict[str, float]:
        now = time.perf_counter()
        recent = [(t, n) for t, n in self._recent if now - t < 10]
        span = now - recent[0][0] if len(recent) > 1 else 0.0
        return {
            "waiting": len(self._waiting), "running": len(self._running), "parallel": self.parallel,
            "kv_bytes_used": self.pool.used, "kv_bytes_budget": self.pool.budget,
            "idle_sessions": self.pool.idle_sessions, "context": self.context,
            "tokens_per_second": sum(n for _, n in recent[1:]) / span if span else 0.0,
        }
