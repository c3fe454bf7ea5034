"""Request bodies -> engine requests, in process: OpenAI's defaults, derived seeds, max_tokens as far as the
context goes, the chat format's stop tokens."""

from __future__ import annotations

import pytest

from netboot.api.errors import ApiError
from netboot.api.schema import Served, parse_chat, parse_completion


class Tokens:
    vocab_size = 100

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        return [2] + [ord(c) % 100 for c in text]


class Chat:
    stop_token_ids = frozenset({1, 99})

    def encode(self, messages) -> list[int]:
        return Tokens().encode("".join(f"{m['role']}:{m['content']};" for m in messages))


SERVED = Served("m", Tokens(), Chat(), 64)


def test_openai_defaults_and_extras_off():
    job = parse_completion({"prompt": "abc"}, SERVED)
    p = job.requests[0].params
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.repeat_penalty) == (1.0, 1.0, 0, 0.0, 1.0)
    assert (p.presence_penalty, p.frequency_penalty, p.seed) == (0.0, 0.0, None)
    assert job.requests[0].max_tokens == 64 - 4  # absent: the rest of the context
    assert not job.stream and not job.logprobs


def test_n_derives_seeds_and_clips_max_tokens_to_the_context():
    job = parse_completion({"prompt": "abc", "n": 3, "seed": 2**32 - 1, "max_tokens": 1000}, SERVED)
    assert [r.params.seed for r in job.requests] == [2**32 - 1, 0, 1]
    assert all(r.max_tokens == 60 for r in job.requests)


def test_chat_parts_roles_and_stop_tokens():
    job = parse_chat({"messages": [{"role": "developer", "content": "s"},
                                   {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                {"type": "text", "text": "b"}]}],
                      "logprobs": True, "top_logprobs": 2, "stop": "x", "top_k": 5}, SERVED)
    request = job.requests[0]
    assert request.prompt_ids == Tokens().encode("system:s;user:a\nb;")
    assert request.stop_token_ids == frozenset({1, 99}) and request.stop == ["x"] and request.logprobs == 2
    assert request.params.top_k == 5 and job.prompt_field == "messages"


def test_a_prompt_at_the_context_is_refused_not_truncated():
    with pytest.raises(ApiError) as e:
        parse_completion({"prompt": "x" * 63}, SERVED)
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"
    assert "64" in e.value.message and "64 tokens" in e.value.message
