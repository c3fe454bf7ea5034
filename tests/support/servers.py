"""Helpers for tests that run `netboot serve` as a real process on 127.0.0.1 and talk to it over real sockets.

    with serving(root, "--request-timeout", "2") as server:
        status, headers, body = raw_request(server.port, b"GET /x HTTP/1.0\\r\\n\\r\\n")

`serving` starts `python -m netboot serve ROOT --port 0 ...`, waits for the banner line
`serving ROOT on http://127.0.0.1:PORT`, drains stderr into `server.lines` (the access log among them) so the server
never blocks on a full pipe, and always stops the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BANNER = re.compile(r"serving (.+) on http://127\.0\.0\.1:(\d+)")
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass
class Server:
    proc: subprocess.Popen
    port: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[dict]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


@contextlib.contextmanager
def serving(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
            nofile: int | None = None) -> Iterator[Server]:
    """`nofile`: the server process's descriptor limit (RLIMIT_NOFILE, soft and hard)."""
    cmd = [sys.executable, "-m", "netboot", "serve", str(root), "--port", "0", *args]

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})}, preexec_fn=limit if nofile else None)
    server = Server(proc)
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            server.lines.append(line)
            m = BANNER.search(line)
            if m and not ready.is_set():
                server.port = int(m.group(2))
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not ready.wait(timeout) or not server.port:
            raise AssertionError("netboot serve did not announce itself:\n" + "\n".join(server.lines))
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)


def need_tool(name: str) -> str:
    """The path of an external program a test needs. Missing: the test fails when $CI is set (CI installs it), and
    is skipped, loudly, elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: this interop test needs it (apt-get install {name})"
        if os.environ.get("CI"):
            pytest.fail(message + " -- and CI is set, where it must be present")
        pytest.skip("SKIPPED LOUDLY: " + message)
    return path


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_close(sock: socket.socket, limit: float = 30.0) -> bytes:
    chunks = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def raw_request(port: int, request: bytes, limit: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is on a new connection, read until the server closes it."""
    with connect(port) as sock:
        sock.sendall(request)
        return split_response(read_until_close(sock, limit))
