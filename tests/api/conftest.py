"""`netboot api` as a real process on a free port of 127.0.0.1 with the default model: one server for the session's
API tests (`api`), and `start_api` for the tests that need a server of their own."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import pytest
from support.serverprocs import Server

READY_TIMEOUT = 120  # s: the model loads in about a second once the kernels are compiled (conftest compiles them)
LISTENING = r"listening on http://127\.0\.0\.1:(\d+)"


class Api(Server):
    """A `netboot api` process, its origin, and helpers to call it."""

    def __init__(self, *extra: str):
        cmd = [sys.executable, "-m", "netboot", "api", "--port", "0", *extra]
        super().__init__(cmd, LISTENING, kind="netboot api")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Api:
        deadline = time.monotonic() + timeout
        while self.get("/health")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"netboot api did not become ready: {''.join(self.output)}")
            time.sleep(0.1)
        return self

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.origin + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        status, _, body = self.request("GET", path, headers=headers)
        return status, body

    def post(self, path: str, data, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        status, got, raw = self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        return status, got, json.loads(raw)

    def metric(self, name: str) -> float:
        """A sample of /metrics by its full name with labels, e.g. 'netboot_requests_finished_total{reason="stop"}'
        (0 when absent)."""
        text = self.get("/metrics")[1].decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)


@pytest.fixture(scope="session")
def api():
    server = Api("--parallel", "4", "--ctx-size", "512").wait_ready()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def model(api) -> str:
    return json.loads(api.get("/v1/models")[1])["data"][0]["id"]


@pytest.fixture
def start_api():
    started: list[Api] = []

    def start(*extra: str) -> Api:
        started.append(Api(*extra))
        return started[-1]

    yield start
    for server in started:
        server.kill()
