"""Streams on the wire (curl -N), many clients at once, and clients that go away: their requests are cancelled in
the engine at once and the server goes on."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from support.serverprocs import wait_for

pytestmark = pytest.mark.network

CANCELLED = 'netboot_requests_finished_total{reason="cancelled"}'


def curl_stream(api, body: dict) -> bytes:
    if shutil.which("curl") is None:
        pytest.skip("!!! SKIPPED: curl is not installed (apt-get install curl)")
    out = subprocess.run(["curl", "-sSN", "--max-time", "60", "-H", "Content-Type: application/json", "-d",
                          json.dumps(body), api.origin + "/v1/chat/completions"], capture_output=True, check=True)
    return out.stdout


def test_raw_sse_framing(api, model):
    raw = curl_stream(api, {"model": model, "messages": [{"role": "user", "content": "Count to five."}],
                            "max_tokens": 6, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}})
    assert raw.endswith(b"data: [DONE]\n\n")
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]"
    events = []
    for block in blocks[:-2]:
        assert block.startswith(b"data: ") and b"\n" not in block, block
        events.append(json.loads(block[len(b"data: "):]))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == model for e in events)
    assert len({e["id"] for e in events}) == 1
    contents = [e for e in events[1:-2]]
    assert contents and all(set(e["choices"][0]["delta"]) == {"content"} for e in contents)
    finish = events[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] in ("stop", "length")
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= 1
    assert all(e["usage"] is None for e in events[:-1])


def test_headers_of_a_stream(api):
    status, headers, raw = api.request("POST", "/v1/completions", json.dumps(
        {"prompt": "Hi", "max_tokens": 2, "stream": True}).encode(), {"Content-Type": "application/json"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n") and b'"text_completion"' in raw


def test_concurrent_clients_all_get_complete_replies(api, model):
    client = openai.OpenAI(base_url=api.origin + "/v1", api_key="x", max_retries=0, timeout=120)
    prompts = [f"Write a sentence about the number {i}." for i in range(6)]

    def alone(prompt: str) -> str:
        return client.completions.create(model=model, prompt=prompt, max_tokens=5, temperature=0).choices[0].text

    expected = [alone(p) for p in prompts[:2]]

    def streamed(prompt: str) -> tuple[str, str]:
        chunks = list(client.completions.create(model=model, prompt=prompt, max_tokens=5, temperature=0,
                                                stream=True))
        return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(streamed, prompts))
    assert all(reason in ("stop", "length") and text for text, reason in results), results
    assert [text for text, _ in results[:2]] == expected  # batched greedy equals alone


def _open(api, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (b"/v1/completions", len(data), data))
    return sock


def test_a_client_leaving_mid_stream_cancels_its_request(api, model):
    before = api.metric(CANCELLED)
    sock = _open(api, {"prompt": "Tell me a long story.", "max_tokens": 500, "temperature": 0, "stream": True})
    got = b""
    while got.count(b"data: ") < 3:  # a few tokens in
        got += sock.recv(4096)
    sock.close()
    started = time.monotonic()
    wait_for(lambda: api.metric(CANCELLED) > before, 10, "the request to be cancelled")
    assert time.monotonic() - started < 5
    wait_for(lambda: api.metric("netboot_requests_running") == 0, 10, "its slot to free")
    status, _, answer = api.post("/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert status == 200 and answer["choices"][0]["text"]


def test_a_client_leaving_before_a_whole_reply_cancels_it(api, model):
    before = api.metric(CANCELLED)
    sock = _open(api, {"prompt": "Tell me a long story.", "max_tokens": 500, "temperature": 0})
    wait_for(lambda: api.metric("netboot_requests_running") == 1, 10, "the request to run")
    sock.close()
    wait_for(lambda: api.metric(CANCELLED) > before, 10, "the request to be cancelled")
    lines = [line for line in api.output if '"status": 499' in line]
    assert lines, "".join(api.output[-5:])
