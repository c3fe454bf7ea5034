"""Bad requests of every kind get OpenAI's error object with the right status and the field at fault in `param`;
the server stays up and serves the next request."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.network

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]

# (path, body, status, param, code): each a request a client may really send
BAD = [
    (CHAT, b"{not json", 400, None, None),
    (CHAT, b"[1, 2]", 400, None, None),
    (CHAT, {}, 400, "messages", None),
    (CHAT, {"messages": "hi"}, 400, "messages", None),
    (CHAT, {"messages": []}, 400, "messages", None),
    (CHAT, {"messages": [{"content": "hi"}]}, 400, "messages[0].role", None),
    (CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role", None),
    (CHAT, {"messages": [{"role": "user"}]}, 400, "messages[0].content", None),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", None),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages[0].content[0]", "unsupported_content"),
    (CHAT, {"messages": USER, "model": "gpt-4o"}, 404, "model", "model_not_found"),
    (CHAT, {"messages": USER, "model": 3}, 400, "model", None),
    (CHAT, {"messages": USER, "temperature": "hot"}, 400, "temperature", None),
    (CHAT, {"messages": USER, "temperature": 2.5}, 400, "temperature", None),
    (CHAT, {"messages": USER, "top_p": 0}, 400, "top_p", None),
    (CHAT, {"messages": USER, "max_tokens": 0}, 400, "max_tokens", None),
    (CHAT, {"messages": USER, "max_tokens": 2.5}, 400, "max_tokens", None),
    (CHAT, {"messages": USER, "max_tokens": True}, 400, "max_tokens", None),
    (CHAT, {"messages": USER, "max_completion_tokens": -1}, 400, "max_completion_tokens", None),
    (CHAT, {"messages": USER, "n": 0}, 400, "n", None),
    (CHAT, {"messages": USER, "n": 1000}, 400, "n", None),
    (CHAT, {"messages": USER, "presence_penalty": 3}, 400, "presence_penalty", None),
    (CHAT, {"messages": USER, "frequency_penalty": -3}, 400, "frequency_penalty", None),
    (CHAT, {"messages": USER, "seed": "x"}, 400, "seed", None),
    (CHAT, {"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    (CHAT, {"messages": USER, "stop": 5}, 400, "stop", None),
    (CHAT, {"messages": USER, "top_logprobs": 2}, 400, "top_logprobs", None),
    (CHAT, {"messages": USER, "logprobs": True, "top_logprobs": 50}, 400, "top_logprobs", None),
    (CHAT, {"messages": USER, "stream_options": {"include_usage": True}}, 400, "stream_options", None),
    (CHAT, {"messages": USER, "stream": "yes"}, 400, "stream", None),
    (CHAT, {"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools",
     "unsupported_parameter"),
    (CHAT, {"messages": USER, "tool_choice": "auto"}, 400, "tool_choice", "unsupported_parameter"),
    (CHAT, {"messages": USER, "functions": [{"name": "f"}]}, 400, "functions", "unsupported_parameter"),
    (CHAT, {"messages": USER, "response_format": {"type": "json_object"}}, 400, "response_format",
     "unsupported_parameter"),
    (CHAT, {"messages": USER, "logit_bias": {"1": 5}}, 400, "logit_bias", "unsupported_parameter"),
    (CHAT, {"messages": USER, "audio": {"voice": "x"}}, 400, "audio", "unsupported_parameter"),
    (CHAT, {"messages": USER, "max_token": 5}, 400, "max_token", None),
    (COMPLETIONS, {}, 400, "prompt", None),
    (COMPLETIONS, {"prompt": ["a", "b"]}, 400, "prompt", None),
    (COMPLETIONS, {"prompt": [[1, 2], [3]]}, 400, "prompt", None),
    (COMPLETIONS, {"prompt": {"text": "a"}}, 400, "prompt", None),
    (COMPLETIONS, {"prompt": [2, 10**9]}, 400, "prompt", None),
    (COMPLETIONS, {"prompt": "a", "logprobs": 50}, 400, "logprobs", None),
    (COMPLETIONS, {"prompt": "a", "echo": True}, 400, "echo", "unsupported_parameter"),
    (COMPLETIONS, {"prompt": "a", "suffix": "z"}, 400, "suffix", "unsupported_parameter"),
    (COMPLETIONS, {"prompt": "a", "best_of": 3}, 400, "best_of", "unsupported_parameter"),
    (COMPLETIONS, {"prompt": "hello " * 600}, 400, "prompt", "context_length_exceeded"),
    (COMPLETIONS, {"prompt": [2] + [1902] * 600}, 400, "prompt", "context_length_exceeded"),
    (CHAT, {"messages": [{"role": "user", "content": "hello " * 600}]}, 400, "messages", "context_length_exceeded"),
    ("/tokenize", {"content": 5}, 400, "content", None),
    ("/detokenize", {"tokens": [1, "a"]}, 400, "tokens", None),
]


def check_error(status: int, body: dict, want_status: int, param: str | None, code: str | None) -> None:
    assert status == want_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error


@pytest.mark.parametrize(("path", "body", "status", "param", "code"), BAD,
                         ids=[f"{i}-{p.rsplit('/', 1)[-1]}-{s}-{par}" for i, (p, _, s, par, _) in enumerate(BAD)])
def test_bad_request(api, path, body, status, param, code):
    got, _, answer = api.post(path, body)
    check_error(got, answer, status, param, code)


def test_harmless_values_of_unsupported_fields_pass(api):
    body = {"messages": USER, "max_tokens": 2, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
            "logit_bias": {}, "user": "someone", "store": False, "parallel_tool_calls": True, "temperature": None}
    status, _, answer = api.post(CHAT, body)
    assert status == 200, answer


def test_context_overflow_names_the_numbers(api):
    _, _, answer = api.post(COMPLETIONS, {"prompt": [2] + [1902] * 600})
    assert "512" in answer["error"]["message"] and "601" in answer["error"]["message"]


def test_unknown_route_and_method(api):
    status, headers, raw = api.request("GET", "/v1/nothing")
    assert status == 404 and b'"error"' in raw
    status, headers, raw = api.request("GET", "/v1/chat/completions")
    assert status == 405 and "POST" in headers["Allow"] and b'"error"' in raw
    status, _, raw = api.request("GET", "/v1/models/gpt-4o")
    assert status == 404 and b"model_not_found" in raw


def test_a_body_over_the_limit(api):
    status, _, raw = api.request("POST", CHAT, b'{"messages": "' + b"x" * (9 << 20) + b'"}',
                                 {"Content-Type": "application/json"})
    assert status == 413 and b'"error"' in raw


def test_the_server_stays_up_after_all_that(api):
    status, _, answer = api.post(COMPLETIONS, {"prompt": "Hello", "max_tokens": 2})
    assert status == 200 and answer["usage"]["completion_tokens"] >= 1
    assert "Traceback" not in "".join(api.output)
