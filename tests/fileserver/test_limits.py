"""`netboot serve` against hostile input: models it cannot read (at start, and added while it runs) never spoil the
others, and Range headers of absurd length or with non-ASCII digits are answered 416, never 500."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support.servers import raw_request, serving

from netboot.errors import Unsatisfiable
from netboot.fileserver.ranges import ByteRange, parse_range

pytestmark = pytest.mark.network  # real server processes on loopback


def write_tiny_gguf(path: Path, seed: int = 0) -> None:
    from support.synthetic import SMALL, write_random_gguf

    from netboot.tensors.ggml import GGMLType

    write_random_gguf(path, SMALL, GGMLType.Q8_0, np.random.default_rng(seed))


def catalog(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.fixture
def root(tmp_path) -> Path:
    """A good model, a truncated GGUF, a GGUF of garbage and a llama2.c checkpoint with a nonsense header."""
    root = tmp_path / "models"
    root.mkdir()
    write_tiny_gguf(root / "good.gguf")
    data = (root / "good.gguf").read_bytes()
    (root / "cut.gguf").write_bytes(data[: len(data) // 2])
    (root / "garbage.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 8)
    (root / "nonsense.bin").write_bytes(b"\xff" * 64)
    return root


def test_unreadable_models_are_left_out_at_start_and_while_running(root):
    with serving(root) as server:
        banner = "\n".join(server.lines)
        assert "Traceback" not in banner
        for bad in ("cut.gguf", "garbage.gguf", "nonsense.bin"):
            assert f"not listed: {bad}: " in banner, banner
        data = catalog(server.port)
        assert [m["name"] for m in data["models"]] == ["good"]
        assert {p["path"] for p in data["problems"]} == {"cut.gguf", "garbage.gguf", "nonsense.bin"}
        assert all(p["error"] for p in data["problems"])

        # Added while it runs: the good model stays listed, the new one is a problem, never a 500.
        (root / "later.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 100)
        write_tiny_gguf(root / "also-good.gguf", seed=1)
        data = catalog(server.port)
        assert sorted(m["name"] for m in data["models"]) == ["also-good", "good"]
        assert "later.gguf" in {p["path"] for p in data["problems"]}
        status, _, _ = raw_request(server.port, b"GET /models/good HTTP/1.0\r\n\r\n")
        assert status == 200
        status, _, body = raw_request(server.port, b"GET /later.gguf HTTP/1.0\r\n\r\n")
        assert status == 200 and body.startswith(b"GGUF")  # still served as a plain file
        time.sleep(0.1)
        assert not any("Traceback" in line for line in server.lines), server.lines


def test_a_reader_bug_on_one_file_does_not_spoil_the_catalog(root, monkeypatch):
    import netboot.fileserver.catalog as catalog_mod

    real = catalog_mod.describe

    def describe(root_, cand, hashes):
        if cand.main == "good.gguf":
            raise KeyError("a bug in a reader")
        return real(root_, cand, hashes)

    monkeypatch.setattr(catalog_mod, "describe", describe)
    write_tiny_gguf(root / "other.gguf", seed=2)
    cat = catalog_mod.Catalog(root)
    assert [e["name"] for e in cat.refresh()] == ["other"]
    assert "KeyError" in cat.problems["good.gguf"]
    assert {p["path"] for p in cat.render_problems()} == {"good.gguf", "cut.gguf", "garbage.gguf", "nonsense.bin"}


# -- Range headers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    "bytes=" + "1" * 5000 + "-",  # int() refuses over 4300 digits: this was a 500 and a traceback
    "bytes=0-" + "9" * 5000,
    "bytes=-" + "9" * 5000,
    "bytes=" + "0" * 20 + "-1",  # leading zeros count too: no number of 20 digits
    "bytes=\u0661-\u0662",  # Arabic-Indic digits: int() and \\d accept them, HTTP does not
    "bytes=0-\uff19",  # a fullwidth 9
    "bytes=" + ",".join(["0-0"] * 2000),  # a header longer than MAX_HEADER
])
def test_hostile_range_values_are_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 1000)


def test_the_longest_sane_positions_still_work():
    assert parse_range("bytes=0-" + "9" * 19, 10) == [ByteRange(0, 10)]
    assert parse_range("bytes=" + "0" * 18 + "5-", 10) == [ByteRange(5, 10)]


def test_hostile_ranges_over_the_wire_are_416_never_500(root):
    with serving(root) as server:
        for header in ("bytes=" + "1" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=\u0661-\u0662"):
            request = f"GET /good.gguf HTTP/1.0\r\nRange: {header}\r\n\r\n".encode()
            status, headers, _ = raw_request(server.port, request)
            assert status == 416, (header[:20], status)
            assert headers.get("content-range", "").startswith("bytes */")
        time.sleep(0.1)
        assert not any("Traceback" in line for line in server.lines), server.lines[-5:]
        assert [e["status"] for e in server.access_log() if e["path"] == "/good.gguf"] == [416, 416, 416]


# -- descriptors and connections ------------------------------------------------------------------------------------


def idle_connections(port: int, n: int) -> list:
    import socket

    out = []
    for _ in range(n):
        out.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return out


def answer(port: int) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /good.gguf HTTP/1.0\r\nRange: bytes=0-3\r\n\r\n")
        return sock.recv(200)


def test_connections_over_the_limit_get_503_not_a_hang(root):
    with serving(root, nofile=128) as server:  # the default limit: (128 - 64) // 2 = 32 connections
        socks = idle_connections(server.port, 200)
        try:
            time.sleep(1.0)
            assert answer(server.port).startswith(b"HTTP/1.1 503 "), "a client over the limit must hear why"
            busy = [line for line in server.lines if "refused with 503" in line]
            assert 1 <= len(busy) <= 4, busy  # at most one line a second
        finally:
            for s in socks:
                s.close()
        time.sleep(0.5)
        assert answer(server.port).startswith(b"HTTP/1.0 206 ")  # the server recovers
        assert not any("Traceback" in line for line in server.lines), server.lines[-5:]


def test_descriptor_exhaustion_logs_one_line_a_second(root):
    with serving(root, "--max-connections", "1000", nofile=128) as server:  # a limit the descriptors cannot hold
        socks = idle_connections(server.port, 200)  # the kernel's backlog takes them: accept() then fails
        try:
            time.sleep(3.0)
        finally:
            for s in socks:
                s.close()
        time.sleep(1.5)
        assert answer(server.port).startswith(b"HTTP/1.0 206 ")
        assert not any("Traceback" in line for line in server.lines), server.lines[-5:]
        out_of_fds = [line for line in server.lines if "cannot accept connections" in line]
        assert 1 <= len(out_of_fds) <= 6, len(out_of_fds)
        assert "Too many open files" in out_of_fds[0]
