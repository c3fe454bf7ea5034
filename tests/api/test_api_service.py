"""`netboot api` as a service: the API key, 429 when the queue is full, /health while loading, /tokenize and
/metrics, a port in use, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket

import openai
import pytest
from support.serverprocs import assert_one_line_error, free_port, netboot, wait_for

pytestmark = pytest.mark.network

KEY = "s3cret-key"


def _stream(api, key: str) -> socket.socket:
    data = json.dumps({"prompt": "Tell me a long story.", "max_tokens": 400, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
                 b"%s" % (key.encode(), len(data), data))
    return sock


@pytest.mark.slow
def test_key_capacity_and_a_clean_stop(start_api):
    api = start_api("--api-key", KEY, "--parallel", "1", "--max-queue", "1", "--ctx-size", "512").wait_ready()
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": "Hi", "max_tokens": 2}
    assert api.post("/v1/completions", body)[0] == 401
    status, headers, answer = api.post("/v1/completions", body, {"Authorization": "Bearer wrong"})
    assert status == 401 and answer["error"]["code"] == "invalid_api_key" and "Bearer" in headers["WWW-Authenticate"]
    assert api.get("/v1/models")[0] == 401
    assert api.post("/tokenize", {"content": "x"})[0] == 401
    assert api.post("/v1/completions", body, auth)[0] == 200
    assert api.get("/health")[0] == 200 and api.get("/metrics")[0] == 200  # open
    client = openai.OpenAI(base_url=api.origin + "/v1", api_key=KEY, max_retries=0)
    assert client.completions.create(model=client.models.list().data[0].id, prompt="Hi", max_tokens=2).choices

    running = _stream(api, KEY)  # takes the one slot
    wait_for(lambda: api.metric("netboot_requests_running") == 1, 10, "the first request to run")
    waiting = _stream(api, KEY)  # fills the queue of one
    wait_for(lambda: api.metric("netboot_requests_waiting") == 1, 10, "the second request to wait")
    status, headers, answer = api.post("/v1/completions", body, auth)
    assert status == 429 and answer["error"]["code"] == "rate_limit_exceeded" and int(headers["Retry-After"]) >= 1
    waiting.close()
    running.close()
    wait_for(lambda: api.metric("netboot_requests_running") == 0, 10, "the slot to free")
    assert api.post("/v1/completions", body, auth)[0] == 200

    assert api.stop(signal.SIGTERM) == 0
    assert "netboot api: stopped" in "".join(api.output)
    assert "Traceback" not in "".join(api.output)


def test_health_is_503_while_the_model_loads(servers, start_api, tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(64))
    stalled = servers.fault("stall-headers", tmp_path / "model.gguf")  # a model server that never answers
    api = start_api(stalled.url("model.gguf"), "--cache-dir", str(tmp_path / "cache"))
    status, headers, raw = api.request("GET", "/health")
    assert status == 503 and json.loads(raw) == {"status": "loading"} and headers["Retry-After"]
    status, headers, raw = api.request("GET", "/v1/models")
    assert status == 503 and json.loads(raw)["error"]["code"] == "model_loading" and headers["Retry-After"]
    assert api.post("/v1/chat/completions", {"messages": []})[0] == 503
    assert api.stop(signal.SIGTERM, timeout=15) == 0  # a stop while loading does not wait for the download


def test_a_model_that_does_not_load_is_one_error_line(start_api, tmp_path):
    api = start_api(str(tmp_path / "missing.gguf"))
    assert api.proc.wait(60) == 1
    out = "".join(api.output)
    assert "Traceback" not in out and out.strip().splitlines()[-1].startswith("netboot: error: ")


def test_port_in_use_is_one_error_line():
    with socket.socket() as taken:
        port = free_port()
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = netboot("api", "--port", str(port), timeout=60)
    assert_one_line_error(result, f"127.0.0.1:{port}")


def test_tokenize_round_trip(api):
    text = "Hello, world! Ünïcödé and 😀 too."
    status, _, answer = api.post("/tokenize", {"content": text})
    assert status == 200 and answer["tokens"] and answer["count"] == len(answer["tokens"])
    with_bos = api.post("/tokenize", {"prompt": text, "add_special": True})[2]["tokens"]
    assert len(with_bos) == len(answer["tokens"]) + 1
    assert api.post("/detokenize", {"tokens": answer["tokens"]})[2] == {"content": text}
    assert api.post("/detokenize", {"tokens": with_bos})[2] == {"content": text}


def test_metrics_in_prometheus_text(api):
    api.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    text = api.get("/metrics")[1].decode()
    for name in ("netboot_http_requests_total", "netboot_prompt_tokens_total", "netboot_generated_tokens_total",
                 "netboot_cached_tokens_total", "netboot_requests_waiting", "netboot_requests_running",
                 "netboot_kv_cache_bytes_used", "netboot_kv_cache_bytes_budget", "netboot_tokens_per_second"):
        assert f"# TYPE {name} " in text, name
    assert api.metric('netboot_http_requests_total{endpoint="/v1/completions",status="200"}') >= 1
    assert api.metric("netboot_generated_tokens_total") >= 1
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_the_access_log_is_json_with_tokens(api):
    api.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    records = [json.loads(line) for line in api.output if line.startswith("{")]
    mine = [r for r in records if r["path"] == "/v1/completions" and r["status"] == 200]
    assert mine and mine[-1]["method"] == "POST" and mine[-1]["completion_tokens"] >= 1
    assert mine[-1]["prompt_tokens"] >= 1 and mine[-1]["duration"] > 0


def test_the_page_or_a_404(api):
    status, headers, raw = api.request("GET", "/")
    assert status in (200, 404)
    if status == 200:
        assert headers["Content-Type"].startswith("text/html")
