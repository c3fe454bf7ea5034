"""OpenAI's /v1/completions and /v1/chat/completions bodies -> a `Job`: the engine requests to run (n of them) and
how to answer. Sampling defaults are OpenAI's (temperature 1, top_p 1, no penalties); the llama.cpp extras top_k,
min_p and repeat_penalty are off unless given. Fields of OpenAI's schema that ask for what netboot does not do
(tools, images, JSON mode, ...) are refused by name; so is any field it does not know."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from netboot.api.errors import ApiError, bad
from netboot.api.fields import ABSENT, Body, kind
from netboot.engine.requests import Request
from netboot.engine.sampling import SamplingParams
from netboot.errors import NetbootError

MAX_N = 16
MAX_STOPS = 4  # as OpenAI
MAX_LOGPROBS = 20
SEED_SPACE = 2**32  # the engine's seeds; a client's seed is taken modulo this

COMMON = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream", "stream_options",
          "presence_penalty", "frequency_penalty", "logprobs", "top_k", "min_p", "repeat_penalty"}
CHAT = COMMON | {"messages", "max_completion_tokens", "top_logprobs"}
COMPLETION = COMMON | {"prompt"}
IGNORED = {"user", "metadata", "service_tier", "prompt_cache_key", "safety_identifier", "parallel_tool_calls"}


def _empty(value: Any) -> bool:
    return value in ([], {}, "")


# OpenAI fields netboot does not implement, with the values that ask for nothing (accepted)
UNSUPPORTED_CHAT = {
    "tools": _empty, "functions": _empty, "tool_choice": lambda v: v == "none", "function_call": lambda v: v == "none",
    "response_format": lambda v: v == {"type": "text"}, "logit_bias": _empty, "audio": lambda v: False,
    "modalities": lambda v: v == ["text"], "prediction": lambda v: False, "reasoning_effort": lambda v: False,
    "web_search_options": lambda v: False, "verbosity": lambda v: False, "store": lambda v: v is False,
}
UNSUPPORTED_COMPLETION = {"logit_bias": _empty, "echo": lambda v: v is False, "suffix": _empty,
                          "best_of": lambda v: v == 1}
IMAGE_PARTS = {"image_url", "input_audio", "file", "image", "audio"}


@dataclass(frozen=True)
class Served:
    """What a request is checked against: the model's name, tokenizer, chat format and context."""

    name: str
    tokenizer: Any
    chat: Any
    context: int


@dataclass
class Job:
    requests: list[Request]  # one per choice
    stream: bool
    include_usage: bool
    logprobs: bool
    prompt_field: str = "prompt"  # where the prompt came from, for errors: "messages" or "prompt"

    @property
    def prompt_tokens(self) -> int:
        return len(self.requests[0].prompt_ids)


def parse_chat(data: Any, served: Served) -> Job:
    body = Body(data)
    body.only(CHAT, UNSUPPORTED_CHAT, IGNORED)
    check_model(body, served)
    messages = [_message(body, i, m) for i, m in enumerate(_list(body, "messages"))]
    if not messages:
        raise bad("'messages' must hold at least one message", "messages")
    try:
        prompt = served.chat.encode(messages)
    except NetbootError as e:
        raise bad(f"the conversation cannot be templated: {e}", "messages") from None
    logprobs = body.boolean("logprobs")
    top = body.integer("top_logprobs", 0, MAX_LOGPROBS)
    if top is not None and not logprobs:
        raise bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    if body.has("max_completion_tokens") and body.has("max_tokens"):
        raise bad("give 'max_completion_tokens' or 'max_tokens', not both", "max_tokens")
    limit = "max_completion_tokens" if body.has("max_completion_tokens") else "max_tokens"
    request = _request(body, served, prompt, limit, (top or 0) if logprobs else None)
    request.stop_token_ids = frozenset(served.chat.stop_token_ids)
    job = _job(body, request)
    job.prompt_field = "messages"
    return job


def parse_completion(data: Any, served: Served) -> Job:
    body = Body(data)
    body.only(COMPLETION, UNSUPPORTED_COMPLETION, IGNORED)
    check_model(body, served)
    prompt = _prompt(body, served)
    logprobs = body.integer("logprobs", 0, MAX_LOGPROBS)
    return _job(body, _request(body, served, prompt, "max_tokens", logprobs))


def check_model(body: Body, served: Served) -> None:
    """`model` may be left out (the one model served is meant); any other name is a 404."""
    model = body.string("model")
    if model is not None and model != served.name:
        raise ApiError(404, f"the model '{model}' does not exist: this server serves '{served.name}'",
                       param="model", code="model_not_found")


def _list(body: Body, field: str) -> list:
    value = body.required(field)
    if not isinstance(value, list):
        raise body.wrong(field, "an array", value)
    return value


def _message(body: Body, i: int, data: Any) -> dict[str, str]:
    where = f"messages[{i}]"
    if not isinstance(data, dict):
        raise bad(f"'{where}' must be an object with 'role' and 'content', not {kind(data)}", where)
    message = Body(data, where)
    role = message.required("role")
    if role not in ("system", "developer", "user", "assistant"):
        raise bad(f"'{where}.role' {role!r} is not supported (system, developer, user or assistant; tool calls are "
                  "not supported)", f"{where}.role")
    message.only({"role", "content"}, {"tool_calls": _empty, "function_call": lambda v: False,
                                       "audio": lambda v: False}, {"name", "refusal"})
    content = message.raw("content")
    if content is ABSENT:
        if role != "assistant":
            raise bad(f"missing required field '{where}.content'", f"{where}.content")
        content = ""
    return {"role": "system" if role == "developer" else role, "content": _content(where, content)}


def _content(where: str, content: Any) -> str:
    """A message's text: a string, or a list of text parts (joined with newlines, as vLLM does)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"'{where}.content' must be a string or an array of text parts, not {kind(content)}",
                  f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind_of = part.get("type") if isinstance(part, dict) else None
        if kind_of in IMAGE_PARTS:
            raise bad(f"'{at}' is an {kind_of} part: this server reads text only", at, "unsupported_content")
        if kind_of != "text" or not isinstance(part.get("text"), str):
            raise bad(f"'{at}' must be {{\"type\": \"text\", \"text\": STRING}}", at)
        texts.append(part["text"])
    return "\n".join(texts)


def _prompt(body: Body, served: Served) -> list[int]:
    """A string, a list of one string, or a list of token ids; a batch of prompts is refused."""
    value = body.required("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        return served.tokenizer.encode(value, parse_special=True)
    if isinstance(value, list) and value and all(type(t) is int for t in value):
        vocab = served.tokenizer.vocab_size
        bad_id = next((t for t in value if not 0 <= t < vocab), None)
        if bad_id is not None:
            raise bad(f"'prompt' holds token id {bad_id}, outside the vocabulary (0..{vocab - 1})", "prompt")
        return list(value)
    if isinstance(value, list) and len(value) > 1:
        raise bad("'prompt' holds several prompts: this server takes one per request (a string, a list of one "
                  "string, or a list of token ids)", "prompt")
    raise bad(f"'prompt' must be a string, a list of one string or a list of token ids, not {kind(value)}",
              "prompt")


def _request(body: Body, served: Served, prompt: list[int], limit: str, logprobs: int | None) -> Request:
    n = len(prompt)
    if n >= served.context:
        raise bad(f"This model's maximum context length is {served.context} tokens. However, your prompt has {n} "
                  "tokens, and at least one must be left for the reply. Please shorten it.",
                  "messages" if body.has("messages") else "prompt", "context_length_exceeded")
    max_tokens = body.integer(limit, 1, 2**31)
    # As far as the context goes: the engine ends the reply there with finish_reason "length".
    max_tokens = min(max_tokens or served.context, served.context - n)
    return Request(prompt, max_tokens, _sampling(body), _stops(body), logprobs=logprobs)


def _sampling(body: Body) -> SamplingParams:
    top_k = body.integer("top_k", -1)
    seed = body.integer("seed", -(2**63), 2**64 - 1)
    values = {
        "temperature": body.number("temperature", 0, 2), "top_p": body.number("top_p", 0, 1, above=True),
        "min_p": body.number("min_p", 0, 1), "repeat_penalty": body.number("repeat_penalty", 0, above=True),
        "presence_penalty": body.number("presence_penalty", -2, 2),
        "frequency_penalty": body.number("frequency_penalty", -2, 2),
    }
    params = {"temperature": 1.0, "top_p": 1.0, "min_p": 0.0, "top_k": max(top_k or 0, 0),
              "seed": None if seed is None else seed % SEED_SPACE}
    params.update({k: v for k, v in values.items() if v is not None})
    try:
        return SamplingParams(**params)
    except NetbootError as e:  # the engine's own bounds, should they be narrower than the checks above
        raise bad(str(e)) from None


def _stops(body: Body) -> list[str]:
    value = body.raw("stop")
    if value is ABSENT:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("'stop' must be a non-empty string or an array of them", "stop")
    if len(stops) > MAX_STOPS:
        raise bad(f"'stop' holds {len(stops)} strings; at most {MAX_STOPS}", "stop")
    return stops


def _job(body: Body, request: Request) -> Job:
    n = body.integer("n", 1, MAX_N) or 1
    stream = body.boolean("stream")
    include_usage = False
    if body.has("stream_options"):
        if not stream:
            raise bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
        options = Body(body.raw("stream_options"), "stream_options")
        options.only({"include_usage"}, {}, {"include_obfuscation"})
        include_usage = options.boolean("include_usage")
    requests = [request]
    for i in range(1, n):  # each choice its own draw: with a seed, seed + i
        seed = request.params.seed
        params = replace(request.params, seed=None if seed is None else (seed + i) % SEED_SPACE)
        requests.append(replace(request, params=params))
    return Job(requests, stream, include_usage, request.logprobs is not None)
