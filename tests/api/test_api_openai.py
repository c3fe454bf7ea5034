"""The official `openai` client against `netboot api`: chat and completions, whole and streamed, with usage, n,
logprobs, stop strings and seeds; greedy output equal to `netboot run`'s."""

from __future__ import annotations

import openai
import pytest
from support.serverprocs import netboot

pytestmark = pytest.mark.network

CHAT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=api.origin + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client, model):
    models = client.models.list()
    assert [m.id for m in models.data] == [model]
    assert client.models.retrieve(model).id == model


def test_chat(client, model):
    reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_stream_with_usage_matches_the_whole_reply(client, model):
    whole = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_and_its_stream(client, model):
    whole = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6,
                                      temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.usage.completion_tokens == 6 and whole.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model=model, prompt=["The capital of France is"], max_tokens=6,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_greedy_completion_equals_netboot_run(client, model):
    prompt = "Once upon a time, in a small village,"
    reply = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    run = netboot("run", "-p", prompt, "-n", "8", "--temperature", "0")
    assert run.returncode == 0, run.stderr
    assert reply.choices[0].text == run.stdout[:-1]  # run ends its output with a newline


def test_token_id_prompt_equals_the_text_prompt(api, client, model):
    ids = api.post("/tokenize", {"content": "The sky is", "add_special": True})[2]["tokens"]
    by_ids = client.completions.create(model=model, prompt=ids, max_tokens=5, temperature=0)
    by_text = client.completions.create(model=model, prompt="The sky is", max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)


def test_n_choices_with_a_seed_differ_and_repeat(client, model):
    def ask():
        return client.chat.completions.create(model=model, messages=CHAT, max_tokens=5, n=2, seed=7,
                                              temperature=1.5)

    first, again = ask(), ask()
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert texts == [c.message.content for c in again.choices]  # same seed, same draws
    assert texts[0] != texts[1]  # each choice its own derived seed
    assert 2 <= first.usage.completion_tokens <= 10


def test_stop_string_ends_the_reply(client, model):
    free = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=8, temperature=0).choices[0]
    assert " 6," in free.text, free.text
    stopped = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=8, temperature=0,
                                        stop=[" 6", "never"]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(" 6")]


def test_chat_logprobs_shape(client, model):
    reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=4, temperature=0, logprobs=True,
                                           top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token  # greedy: the chosen token is the most likely
        assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs), reverse=True)


def test_completion_logprobs_legacy_shape(client, model):
    reply = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4,
                                      temperature=0, logprobs=2)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens) == reply.choices[0].text
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    assert all(len(top) <= 2 and lp.tokens[i] in top for i, top in enumerate(lp.top_logprobs))


def test_text_parts_and_extras(client, model):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colors."}]}]
    reply = client.chat.completions.create(model=model, messages=parts, max_tokens=4, temperature=0.7,
                                           presence_penalty=0.5, frequency_penalty=0.5,
                                           extra_body={"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1})
    assert reply.choices[0].message.content


def test_max_tokens_beyond_the_context_ends_with_length(api, client, model):
    ids = [2] + [1902] * 505  # 506 of the context's 512 positions
    reply = client.completions.create(model=model, prompt=ids, max_tokens=500, temperature=0)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == 506 and 1 <= reply.usage.completion_tokens <= 6
