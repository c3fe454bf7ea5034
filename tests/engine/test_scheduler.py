"""The serving engine on the real default model: batched results equal single ones, chat turns reuse their KV cache
(past the sliding window too), cancellation frees the slot, the KV budget makes requests wait or refuses them, the
context is reported, a long prompt does not freeze the others."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from netboot.engine.generate import Generation
from netboot.engine.requests import Delta, Request
from netboot.engine.sampling import SamplingParams
from netboot.engine.scheduler import Engine
from netboot.errors import CapacityError, ContextLimitError, RequestError
from netboot.model.kv_cache import KVCache

GREEDY = SamplingParams(temperature=0)
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three primary colors are",
           "Water boils at", "In 1492,"]
# Batched products sum in another order than one sequence's: logits agree to this, relative to their largest.
LOGIT_BOUND = 2e-4


@pytest.fixture(scope="module")
def model(default_model):
    return default_model.model


@pytest.fixture(scope="module")
def tokenizer(default_model):
    return default_model.tokenizer


def single(model, tokenizer, ids: list[int], n: int) -> list[int]:
    gen = Generation(model, tokenizer, ids, max_tokens=n, params=GREEDY)
    gen.text()
    return gen.tokens


def reply(handle) -> tuple[list[int], object]:
    tokens = []
    for event in handle:
        if isinstance(event, Delta):
            tokens.extend(event.tokens)
    return tokens, handle.finished


def test_batched_logits_agree_with_single_ones(model, tokenizer):
    runs = [(tokenizer.encode(p), model.new_cache(), 0) for p in PROMPTS[:4]]
    batched = model.forward_batch(runs)
    for (ids, _, _), row in zip(runs, batched, strict=True):
        alone = model.forward(ids, model.new_cache(), 0)
        assert np.abs(row - alone).max() <= LOGIT_BOUND * np.abs(alone).max()
    # A decode step of 4 sequences at different positions (the batched kernel) against each alone.
    steps = [([int(np.argmax(row))], cache, len(ids)) for (ids, cache, _), row in zip(runs, batched, strict=True)]
    stepped = model.forward_batch(steps)
    for (ids, _, _), (token, _, pos), row in zip(runs, steps, stepped, strict=True):
        cache = model.new_cache()
        model.forward(ids, cache, 0)
        alone = model.forward(token, cache, pos)
        assert np.abs(row - alone).max() <= LOGIT_BOUND * np.abs(alone).max()


def test_greedy_replies_in_a_batch_equal_replies_alone(model, tokenizer):
    expected = [single(model, tokenizer, tokenizer.encode(p), 20) for p in PROMPTS]
    with Engine(model, tokenizer, parallel=len(PROMPTS), context=512) as engine:
        handles = [engine.submit(Request(tokenizer.encode(p), 20, GREEDY)) for p in PROMPTS]
        got = [reply(h) for h in handles]
    for want, (tokens, finished) in zip(expected, got, strict=True):
        assert tokens == want
        assert (finished.reason, finished.detail) == ("length", "max_tokens")
        assert finished.completion_tokens == 20


def test_a_next_turn_feeds_only_its_new_tokens_also_past_the_sliding_window(model, tokenizer):
    window = model.config.sliding_window
    story = " ".join(f"Line {i}: the cat sat on mat number {i}." for i in range(80))
    first = tokenizer.encode(story)
    assert len(first) > window + 50  # the sliding-window layers must resume past their window
    with Engine(model, tokenizer, parallel=2, context=2048) as engine:
        tokens, finished = reply(engine.submit(Request(first, 8, GREEDY)))
        assert finished.cached_tokens == 0
        second = first + tokens + tokenizer.encode(" Line 80:", add_bos=False)
        again, finished = reply(engine.submit(Request(second, 8, GREEDY)))
        assert finished.cached_tokens == len(first) + len(tokens) - 1  # the last reply token was never fed
        assert finished.prompt_tokens == len(second)
    assert again == single(model, tokenizer, second, 8)


def test_cancel_stops_at_once_and_frees_the_slot(model, tokenizer):
    with Engine(model, tokenizer, parallel=1, context=1024) as engine:
        long = engine.submit(Request(tokenizer.encode("Once upon a time"), 900, GREEDY))
        waiting = engine.submit(Request(tokenizer.encode("Water boils at"), 4, GREEDY))
        first = next(iter(long))
        assert isinstance(first, Delta)
        assert engine.snapshot()["waiting"] == 1  # one slot: the second waits
        start = time.perf_counter()
        long.cancel()
        tokens, finished = reply(long)
        assert finished.reason == "cancelled"
        assert finished.completion_tokens < 50
        _, done = reply(waiting)
        assert done.reason == "length"
        assert time.perf_counter() - start < 10


def test_kv_budget_makes_requests_wait_or_refuses_them(model, tokenizer):
    per = KVCache.bytes_per_position(model.config)
    ids = tokenizer.encode("Once upon a time")
    with Engine(model, tokenizer, parallel=4, context=1024, kv_budget=120 * per) as engine:
        with pytest.raises(RequestError, match="KV cache"):
            engine.submit(Request(ids, 200, GREEDY))  # 200 + prompt positions can never fit in 120
        a = engine.submit(Request(ids, 80, GREEDY))
        b = engine.submit(Request(ids, 80, GREEDY))  # both need 85 of the 120 positions: b waits for a
        order = []

        def wait(name, handle):
            reply(handle)
            order.append(name)

        threads = [threading.Thread(target=wait, args=pair) for pair in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert order == ["a", "b"]
        assert b.finished.queued_seconds > 0.5 * a.finished.decode_seconds
        assert engine.pool.used <= engine.pool.budget


def test_the_context_is_reported_never_truncated(model, tokenizer):
    with Engine(model, tokenizer, parallel=1, context=32) as engine:
        with pytest.raises(ContextLimitError, match="40 tokens; the context holds 32"):
            engine.submit(Request([2] + [651] * 39, 4, GREEDY))
        ids = tokenizer.encode("Once upon a time")
        tokens, finished = reply(engine.submit(Request(ids, 100, GREEDY)))
        assert (finished.reason, finished.detail) == ("length", "context")
        assert len(ids) + len(tokens) == 32


def test_a_long_prompt_does_not_freeze_the_others(model, tokenizer):
    with Engine(model, tokenizer, parallel=2, context=2048) as engine:
        running = engine.submit(Request(tokenizer.encode("Once upon a time"), 300, GREEDY))
        events = iter(running)
        next(events)
        long = engine.submit(Request(tokenizer.encode("word " * 600), 1, GREEDY))
        made_during = 0
        while long.finished is None:
            event = next(events)
            made_during += isinstance(event, Delta)
        running.cancel()
        list(events)
    assert made_during >= 5  # 600 prompt tokens in chunks of 64: a decode step after each chunk


def test_stops_and_logprobs(model, tokenizer):
    ids = tokenizer.encode("The capital of France is")
    with Engine(model, tokenizer, parallel=2, context=256) as engine:
        text, finished = engine.submit(Request(ids, 30, GREEDY, stop=["France"])).text()
        assert "France" not in text and finished.detail == "stop"
        full, _ = engine.submit(Request(ids, 30, GREEDY)).text()
        assert full.startswith(text) and full[len(text):].startswith("France")
        first = tokenizer.encode(full, add_bos=False)[0]
        _, finished = engine.submit(Request(ids, 30, GREEDY, stop_token_ids=frozenset({first}))).text()
        assert (finished.detail, finished.completion_tokens) == ("eos", 0)
        deltas = [e for e in engine.submit(Request(ids, 3, GREEDY, logprobs=5)) if isinstance(e, Delta) and e.tokens]
    for delta in deltas:
        (lp,) = delta.logprobs
        assert len(lp.top) == 5 and lp.top[0] == (lp.token, pytest.approx(lp.logprob))  # greedy: the best one
        assert lp.logprob <= 0 and sum(np.exp(v) for _, v in lp.top) <= 1 + 1e-6


def test_bad_requests_and_a_full_queue(model, tokenizer):
    with Engine(model, tokenizer, parallel=1, context=64, max_queue=1) as engine:
        with pytest.raises(RequestError, match="empty"):
            engine.submit(Request([], 4))
        with pytest.raises(RequestError, match="outside the vocabulary"):
            engine.submit(Request([2, model.config.vocab_size], 4))
        busy = engine.submit(Request([2, 651], 50, GREEDY))
        next(iter(busy))  # running: the queue is empty again
        queued = engine.submit(Request([2, 651], 2, GREEDY))
        with pytest.raises(CapacityError) as full:
            engine.submit(Request([2, 651], 2, GREEDY))
        assert full.value.retry_after > 0
        busy.cancel()
        assert reply(queued)[1].reason == "length"


def test_an_unrelated_prompt_does_not_take_a_kept_conversation(model, tokenizer):
    first = tokenizer.encode("Once upon a time there was a lighthouse keeper")
    with Engine(model, tokenizer, parallel=1, context=256) as engine:
        tokens, _ = reply(engine.submit(Request(first, 6, GREEDY)))
        _, other = reply(engine.submit(Request(tokenizer.encode("Water boils at"), 4, GREEDY)))
        assert other.cached_tokens == 0  # only BOS in common: a fresh cache, the story's is kept
        _, again = reply(engine.submit(Request(first + tokens + tokenizer.encode(" and", add_bos=False), 4, GREEDY)))
        assert again.cached_tokens == len(first) + len(tokens) - 1
