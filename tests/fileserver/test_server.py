"""`netboot serve` as a real process on 127.0.0.1, over real sockets: the catalog, ranges and validators, the
seed's HTTP/1.0 client, path safety (raw request targets: clients normalize paths), the token, slow and hostile
clients, 50 concurrent downloads with the server's memory watched, and curl / wget interop."""

from __future__ import annotations

import hashlib
import http.client
import json
import mmap
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import xxhash
from support.servers import connect, need_tool, raw_request, read_until_close, serving, split_response

pytestmark = pytest.mark.network  # real server processes on loopback

ENTRY_KEYS = {"name", "url", "format", "architecture", "n_layers", "size", "sha256", "files", "tokenizer", "layers",
              "globals"}
FILE_KEYS = {"path", "url", "size", "sha256", "etag"}
LAYER_KEYS = {"layer", "file", "start", "end", "sha256", "xxh3_128", "tensors"}
GLOBAL_KEYS = {"name", "type", "file", "start", "end", "sha256", "xxh3_128"}
DATA = bytes(range(256)) * 4 + b"0123456789"  # 1034 bytes
SEED_REQUEST = b"GET /stories110M.bin HTTP/1.0\r\nHost: 10.0.2.2\r\nConnection: close\r\n\r\n"
SECRET = b"outside the served directory"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_tiny_gguf(path: Path, seed: int) -> None:
    from support.synthetic import SMALL, write_random_gguf

    from netboot.tensors.ggml import GGMLType

    write_random_gguf(path, SMALL, GGMLType.Q8_0, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def tree(tmp_path_factory, default_model_path) -> Path:
    """A model directory: the default model, a llama2.c model named like the seed's, a GGUF in a subdirectory, a
    2-shard SafeTensors directory, plain files, hidden files, and symlinks out of the tree and to a hidden file."""
    from support.synthetic import (
        SMALL,
        byte_vocab,
        random_weights,
        write_llama2c,
        write_llama2c_tokenizer,
        write_safetensors,
    )

    base = tmp_path_factory.mktemp("serve")
    root = base / "models"
    root.mkdir()
    link_or_copy(default_model_path, root / default_model_path.name)
    weights = random_weights(SMALL, np.random.default_rng(5))
    write_llama2c(root / "stories110M.bin", SMALL, weights)
    write_llama2c_tokenizer(root / "tokenizer.bin", byte_vocab(SMALL.vocab))
    (root / "sub").mkdir()
    write_tiny_gguf(root / "sub" / "tiny.gguf", 1)
    write_safetensors(root / "hf", SMALL, weights, shards=2)
    (root / "hf" / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    (root / "data.dat").write_bytes(DATA)
    (root / "empty.dat").write_bytes(b"")
    (root / "README.md").write_text("models for the tests\n")
    (root / ".secret").write_bytes(SECRET)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "file.gguf").write_bytes(SECRET)
    (base / "outside.txt").write_bytes(SECRET)
    (root / "escape").symlink_to(base / "outside.txt")
    (root / "escape.gguf").symlink_to(base / "outside.txt")
    (root / "sub" / "up").symlink_to(base)
    (root / "to-hidden").symlink_to(root / ".secret")
    (root / "inside-link.dat").symlink_to(root / "data.dat")
    return root


@pytest.fixture(scope="module")
def server(tree):
    with serving(tree, "--request-timeout", "2", "--send-timeout", "10") as s:
        yield s


def get(server, path: str, **kwargs) -> httpx.Response:
    return httpx.get(server.base + path, timeout=30, **kwargs)


# -- the catalog ----------------------------------------------------------------------------------------------------


def test_banner_names_every_model_and_how_to_boot_it(server):
    text = "\n".join(server.lines)
    for path in ("gemma-3-270m-q4_k_m.gguf", "stories110M.bin", "sub/tiny.gguf", "hf/"):
        assert f"netboot run {server.base}/{path}" in text, text
        assert f"http://10.0.2.2:{server.port}/{path}" in text, text
    assert "253.1 MB" in text


def test_catalog_schema_and_hashes(server, tree, default_model_path):
    r = get(server, "/models")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    entries = {e["name"]: e for e in r.json()["models"]}
    assert set(entries) == {"gemma-3-270m-q4_k_m", "stories110M", "sub/tiny", "hf"}  # nothing hidden, no escapes
    for e in entries.values():
        assert set(e) == ENTRY_KEYS
        assert all(set(f) == FILE_KEYS for f in e["files"])
        assert all(set(r) == LAYER_KEYS for r in e["layers"])
        assert all(set(g) == GLOBAL_KEYS for g in e["globals"])
        assert e["size"] == sum(f["size"] for f in e["files"])
        assert e["sha256"] == e["files"][0]["sha256"]
        for f in e["files"]:
            assert f["url"] == f"{server.base}/{f['path']}"
            assert f["size"] == (tree / f["path"]).stat().st_size
            head = httpx.head(f["url"])
            assert head.headers["etag"] == f["etag"]
            if f["size"] < 1 << 20:
                assert sha256(get(server, "/" + f["path"]).content) == f["sha256"]
        check_ranges(tree, e)

    g = entries["gemma-3-270m-q4_k_m"]
    assert (g["format"], g["architecture"], g["n_layers"], g["tokenizer"]) == ("gguf", "gemma3", 18, None)
    assert g["url"] == f"{server.base}/gemma-3-270m-q4_k_m.gguf"
    assert g["sha256"] == sha256_file(default_model_path)
    assert [r["layer"] for r in g["layers"]] == list(range(18))
    assert {"token_embd.weight", "output_norm.weight"} <= {x["name"] for x in g["globals"]}

    s = entries["stories110M"]
    assert (s["format"], s["architecture"], s["n_layers"]) == ("llama2c", "llama", 2)
    assert [f["path"] for f in s["files"]] == ["stories110M.bin", "tokenizer.bin"]
    assert s["tokenizer"] == f"{server.base}/tokenizer.bin"
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} == {x["name"] for x in s["globals"]}

    t = entries["sub/tiny"]
    assert (t["format"], t["url"], t["tokenizer"]) == ("gguf", f"{server.base}/sub/tiny.gguf", None)

    h = entries["hf"]
    assert (h["format"], h["architecture"], h["url"]) == ("safetensors", "llama", f"{server.base}/hf/")
    paths = [f["path"] for f in h["files"]]
    assert paths[:2] == ["hf/model-00001-of-00002.safetensors", "hf/model-00002-of-00002.safetensors"]
    assert set(paths[2:]) == {"hf/config.json", "hf/model.safetensors.index.json", "hf/tokenizer.json"}
    assert h["tokenizer"] == f"{server.base}/hf/tokenizer.json"
    # the shards split each layer's tensors: one record per (layer, file), in layer order
    assert len(h["layers"]) == 4 and [r["layer"] for r in h["layers"]] == [0, 0, 1, 1]
    assert {r["file"] for r in h["layers"]} == set(paths[:2])

    # One entry by name; unknown names are a JSON 404.
    assert get(server, "/models/sub/tiny").json() == t
    missing = get(server, "/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def check_ranges(tree: Path, entry: dict) -> None:
    """Every layer and global record's sha256 and xxh3_128 are those of its bytes; every tensor lies inside its
    layer's span."""
    for rel in {r["file"] for r in entry["layers"] + entry["globals"]}:
        with open(tree / rel, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for r in entry["layers"] + entry["globals"]:
                if r["file"] == rel:
                    assert sha256(m[r["start"] : r["end"]]) == r["sha256"], (rel, r.get("layer"), r.get("name"))
                    assert xxhash.xxh3_128_hexdigest(m[r["start"] : r["end"]]) == r["xxh3_128"]
                    for t in r.get("tensors", []):
                        assert r["start"] <= t["start"] < t["end"] <= r["end"]


def test_catalog_urls_follow_the_host_header(server):
    r = httpx.get(server.base + "/models", headers={"Host": "boot.example:8123"})
    entry = next(e for e in r.json()["models"] if e["name"] == "stories110M")
    assert entry["url"] == "http://boot.example:8123/stories110M.bin"
    assert entry["tokenizer"] == "http://boot.example:8123/tokenizer.bin"
    # A malformed Host falls back to the address the request came in on.
    status, _, body = raw_request(server.port, b"GET /models HTTP/1.0\r\nHost: bad host/x\r\n\r\n")
    assert status == 200 and f'"url": "{server.base}/stories110M.bin"'.encode() in body


def test_hashes_are_cached_beside_the_files_and_never_served(server, tree):
    cache = json.loads((tree / ".netboot" / "hashes.json").read_text())
    assert cache["files"]["stories110M.bin"]["sha256"] == sha256_file(tree / "stories110M.bin")
    assert get(server, "/.netboot/hashes.json").status_code == 404


def test_catalog_follows_changes_and_restarts_reuse_hashes(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    model = root / "tiny.gguf"
    write_tiny_gguf(model, 1)
    with serving(root) as s:
        first = httpx.get(s.base + "/models/tiny").json()
        assert first["sha256"] == sha256_file(model)
        write_tiny_gguf(model, 2)  # same size, new bytes
        os.utime(model, ns=(time.time_ns(), time.time_ns() + 10**9))
        second = httpx.get(s.base + "/models/tiny").json()  # no restart: stat says it changed
        assert second["sha256"] == sha256_file(model) != first["sha256"]
        assert second["files"][0]["etag"] != first["files"][0]["etag"]
        assert second["files"][0]["etag"] == httpx.head(s.base + "/tiny.gguf").headers["etag"]
        (root / "b").mkdir()
        write_tiny_gguf(root / "b" / "new.gguf", 3)  # a new model appears in the catalog at once
        assert httpx.get(s.base + "/models/b/new").status_code == 200
    cache_file = root / ".netboot" / "hashes.json"
    written = cache_file.stat().st_mtime_ns
    with serving(root) as s:  # restart: every hash comes from the cache, which is not rewritten
        assert httpx.get(s.base + "/models/tiny").json()["sha256"] == second["sha256"]
    assert cache_file.stat().st_mtime_ns == written

    # A root where ROOT/.netboot cannot be made keeps its hashes in the netboot cache directory.
    other = tmp_path / "ro"
    other.mkdir()
    write_tiny_gguf(other / "x.gguf", 4)
    (other / ".netboot").write_text("not a directory")
    with serving(other, env={"NETBOOT_CACHE": str(tmp_path / "cache")}) as s:
        assert httpx.get(s.base + "/models/x").json()["sha256"] == sha256_file(other / "x.gguf")
    kept = list((tmp_path / "cache" / "server-hashes").glob("*.json"))
    assert len(kept) == 1 and "x.gguf" in json.loads(kept[0].read_text())["files"]


# -- the seed's HTTP/1.0 client -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stories110M.bin", "gemma-3-270m-q4_k_m.gguf"])
def test_seed_http10_client_gets_the_whole_file(server, tree, name):
    request = SEED_REQUEST.replace(b"/stories110M.bin", f"/{name}".encode())
    with connect(server.port) as sock:
        sock.sendall(request)
        raw = read_until_close(sock, 60)  # the seed reads until the server closes
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    line = next(x for x in head.split(b"\r\n") if x.startswith(b"Content-Length:"))  # case-sensitive, as the seed
    assert int(line.split(b":")[1]) == (tree / name).stat().st_size == len(body)
    assert sha256(body) == sha256_file(tree / name)


# -- ranges and validators ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, start, end", [
    ("0-0", 0, 1),  # first byte
    ("1033-1033", 1033, 1034),  # last byte
    ("-1", 1033, 1034),
    ("0-1033", 0, 1034),  # the whole file
    ("0-", 0, 1034),
    ("1000-5000", 1000, 1034),  # clamped
    ("-5000", 0, 1034),  # a suffix longer than the file
    ("10-19", 10, 20),
])
def test_single_ranges(server, spec, start, end):
    r = get(server, "/data.dat", headers={"Range": f"bytes={spec}"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert int(r.headers["content-length"]) == end - start
    assert r.content == DATA[start:end]


@pytest.mark.parametrize("path, spec", [
    ("/data.dat", "1034-"), ("/data.dat", "5000-6000"), ("/data.dat", "20-10"), ("/data.dat", "-0"),
    ("/data.dat", "x-y"), ("/empty.dat", "0-"), ("/empty.dat", "-1"), ("/empty.dat", "0-0"),
])
def test_unsatisfiable_ranges(server, path, spec):
    r = get(server, path, headers={"Range": f"bytes={spec}"})
    size = 0 if "empty" in path else len(DATA)
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"


def test_whole_files_head_and_headers(server):
    r = get(server, "/data.dat")
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"') and not r.headers["etag"].startswith("W/")
    assert r.headers["last-modified"].endswith("GMT")
    empty = get(server, "/empty.dat")
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (200, b"", "0")
    head = httpx.head(server.base + "/data.dat")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(DATA))
    assert head.headers["etag"] == r.headers["etag"]
    # A Range on HEAD is ignored (RFC 9110: ranges are defined for GET only); another unit is ignored on GET.
    assert httpx.head(server.base + "/data.dat", headers={"Range": "bytes=0-0"}).status_code == 200
    assert get(server, "/data.dat", headers={"Range": "items=0-0"}).content == DATA


def test_multiple_ranges_are_multipart(server):
    r = get(server, "/data.dat", headers={"Range": "bytes=0-1,100-103,-2"})
    assert r.status_code == 206
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    assert int(r.headers["content-length"]) == len(r.content)
    parts = []
    for chunk in r.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        content_range = next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-range:"))
        parts.append((content_range.split(b":", 1)[1].strip().decode(), body[:-2]))  # CRLF before the boundary
    assert parts == [("bytes 0-1/1034", DATA[0:2]), ("bytes 100-103/1034", DATA[100:104]),
                     ("bytes 1032-1033/1034", DATA[1032:])]
    # overlapping ranges are merged: never more bytes than the file
    merged = get(server, "/data.dat", headers={"Range": "bytes=0-,0-,0-"})
    assert merged.status_code == 206 and merged.content == DATA


def test_conditional_requests(server):
    first = get(server, "/data.dat")
    tag, modified = first.headers["etag"], first.headers["last-modified"]
    assert get(server, "/data.dat", headers={"If-None-Match": tag}).status_code == 304
    assert get(server, "/data.dat", headers={"If-None-Match": f'"x", W/{tag}'}).status_code == 304
    assert get(server, "/data.dat", headers={"If-None-Match": '"other"'}).status_code == 200
    assert get(server, "/data.dat", headers={"If-Modified-Since": modified}).status_code == 304
    assert get(server, "/data.dat", headers={"If-Modified-Since": "Thu, 01 Jan 1998 00:00:00 GMT"}).content == DATA
    not_modified = get(server, "/data.dat", headers={"If-None-Match": tag})
    assert not_modified.content == b"" and not_modified.headers["etag"] == tag
    ranged = {"Range": "bytes=5-9"}
    assert get(server, "/data.dat", headers={**ranged, "If-Range": tag}).content == DATA[5:10]
    assert get(server, "/data.dat", headers={**ranged, "If-Range": modified}).status_code == 206
    stale = get(server, "/data.dat", headers={**ranged, "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == DATA
    assert get(server, "/data.dat", headers={**ranged, "If-Range": f"W/{tag}"}).status_code == 200
    assert get(server, "/data.dat", headers={"If-Match": '"other"'}).status_code == 412


# -- connections ----------------------------------------------------------------------------------------------------


def test_keep_alive_then_idle_connections_are_closed(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/data.dat")
    assert conn.getresponse().read() == DATA
    sock = conn.sock
    conn.request("GET", "/data.dat", headers={"Range": "bytes=0-3"})
    assert conn.getresponse().read() == DATA[:4]
    assert conn.sock is sock  # the same connection
    began = time.monotonic()
    assert sock.recv(1) == b""  # closed by the server once idle for --request-timeout (2 s)
    assert time.monotonic() - began < 5
    conn.close()


def test_slow_header_client_is_disconnected(server):
    began = time.monotonic()
    with connect(server.port) as sock:
        sock.sendall(b"GET /data.dat HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        closed = False
        while time.monotonic() - began < 10:
            try:
                sock.sendall(b"a")  # one byte at a time, never finishing the head
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                try:
                    closed = sock.recv(4096) == b""
                except OSError:
                    closed = True
                if closed:
                    break
    assert closed and time.monotonic() - began < 5  # --request-timeout 2
    assert get(server, "/data.dat").content == DATA  # and the server is fine


def test_a_client_that_stops_reading_is_dropped_a_slow_one_is_not(tree, default_model_path):
    name = default_model_path.name
    request = f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with serving(tree, "--send-timeout", "2") as s:
        slow, stalled = connect(s.port), connect(s.port)
        slow.sendall(request)
        stalled.sendall(request)  # and never reads
        got, began = 0, time.monotonic()
        while time.monotonic() - began < 4:  # about 4 MB/s, for 4 s: it keeps being served
            data = slow.recv(64 << 10)
            assert data, "the slow reader was cut off"
            got += len(data)
            time.sleep(1 / 64)
        slow.close()
        received = read_until_close(stalled, 10)
        stalled.close()
        size = (tree / name).stat().st_size
        assert 4 << 20 < got < size and len(received) < size
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(s.access_log()) < 2:
            time.sleep(0.05)
        assert sorted(e["bytes"] < size for e in s.access_log()) == [True, True]


def test_huge_headers_are_refused_not_hung(server):
    began = time.monotonic()
    status, _, _ = raw_request(server.port, b"GET /data.dat HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536
                               + b"\r\n\r\n", limit=10)
    assert status in (400, 431) and time.monotonic() - began < 5
    status, _, _ = raw_request(server.port, b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n", limit=10)
    assert status in (400, 414, 431)


def test_only_get_and_head(server):
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = httpx.request(method, server.base + "/data.dat", content=b"x")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", method
    assert get(server, "/data.dat").content == DATA  # untouched


# -- path safety (raw targets: HTTP clients would normalize these) -------------------------------------------------


@pytest.mark.parametrize("target", [
    "/../outside.txt", "/..%2foutside.txt", "/%2e%2e/outside.txt", "/%2E%2E%2Foutside.txt", "/sub/../../outside.txt",
    "/sub/%2e%2e/%2e%2e/outside.txt", "/..\\outside.txt", "/..%5coutside.txt", "/%5c..%5coutside.txt",
    "//outside.txt", "/sub//../outside.txt", "/escape", "/escape.gguf", "/sub/up/outside.txt", "/to-hidden",
    "/.secret", "/%2esecret", "/.hidden/file.gguf", "/%2ehidden/file.gguf", "/.netboot/hashes.json",
    "/data.dat%00", "/data.dat%00.txt", "/%00", "/etc/passwd", "/sub/", "/", "/sub", "/hf/",
    "http://127.0.0.1/../outside.txt", "../outside.txt", "*", "/data.dat/..", "/%ff%fe",
])
def test_nothing_outside_the_tree_or_hidden_is_served(server, target):
    status, _, body = raw_request(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                  .encode("latin-1"))
    assert status in (400, 404), (target, status)
    assert SECRET not in body


def test_raw_nul_and_backslash_bytes(server):
    for target in (b"/data.dat\x00", b"/\\..\\outside.txt", b"/sub\\..\\..\\outside.txt"):
        status, _, body = raw_request(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close"
                                      b"\r\n\r\n", limit=5)
        assert status in (400, 404), target
        assert SECRET not in body


def test_symlinks_inside_the_tree_are_served(server):
    assert get(server, "/inside-link.dat").content == DATA
    assert get(server, "/README.md").text == "models for the tests\n"  # plain files too


# -- the token ------------------------------------------------------------------------------------------------------


def test_token_is_required_everywhere(tree):
    with serving(tree, "--token", "s3cret") as s:
        for path in ("/data.dat", "/models", "/nope"):
            r = httpx.get(s.base + path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        assert httpx.get(s.base + "/data.dat", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(s.base + "/data.dat", headers={"Authorization": "Bearer s3cret"}).content == DATA
        assert httpx.get(s.base + "/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert "s3cret" not in "\n".join(s.lines)  # the banner does not print it


# -- the access log -------------------------------------------------------------------------------------------------


def test_access_log_is_one_json_line_per_request(server):
    get(server, "/data.dat", headers={"Range": "bytes=3-6", "Connection": "close"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hits = [e for e in server.access_log() if e.get("range") == "bytes=3-6"]
        if hits:
            break
        time.sleep(0.05)
    record = hits[-1]
    assert set(record) == {"time", "client", "port", "method", "path", "status", "bytes", "duration", "range"}
    assert isinstance(record["port"], int) and record["port"] > 0
    assert (record["client"], record["method"], record["path"], record["status"], record["bytes"]) == (
        "127.0.0.1", "GET", "/data.dat", 206, 4)
    assert record["duration"] >= 0 and record["time"].endswith("Z")


# -- load -----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fifty_concurrent_downloads_verified_with_small_server_memory(server, tree, default_model_path):
    curl = need_tool("curl")
    name = default_model_path.name
    size = (tree / name).stat().st_size
    expected = sha256_file(tree / name)
    proc = psutil.Process(server.proc.pid)
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def download(client: subprocess.Popen, i: int) -> None:
        digest = hashlib.sha256()  # hashed here (OpenSSL's sha256 is several times faster than sha256sum)
        while chunk := client.stdout.read(1 << 20):
            digest.update(chunk)
        client.wait()
        digests[i] = digest.hexdigest() if client.returncode == 0 else f"curl exited with {client.returncode}"

    watcher = threading.Thread(target=watch)
    watcher.start()
    digests: list[str | None] = [None] * 50
    clients: list[subprocess.Popen] = []
    try:
        clients += [subprocess.Popen([curl, "-sS", "--fail", f"{server.base}/{name}"], stdout=subprocess.PIPE)
                   for _ in range(50)]
        readers = [threading.Thread(target=download, args=(c, i)) for i, c in enumerate(clients)]
        for r in readers:
            r.start()
        for r in readers:
            r.join(120)
    finally:
        done.set()
        watcher.join()
        for c in clients:
            if c.poll() is None:
                c.kill()
    assert digests == [expected] * 50
    # sendfile from the page cache: the server's memory does not grow with the file, nor with the clients
    assert peak[0] < size / 2, (peak[0], size)
    assert peak[0] - baseline < 64 << 20, (baseline, peak[0])
    full = [e for e in server.access_log() if e["path"] == f"/{name}" and e["status"] == 200 and e["bytes"] == size]
    assert len(full) >= 50


# -- curl and wget ------------------------------------------------------------------------------------------------


def test_curl_ranges_and_resume(server, tree, tmp_path, default_model_path):
    curl = need_tool("curl")
    name = default_model_path.name
    part = subprocess.run([curl, "-sS", "--fail", "-r", "100-199", f"{server.base}/{name}"], capture_output=True,
                          check=True).stdout
    with open(tree / name, "rb") as f:
        f.seek(100)
        assert part == f.read(100)
        f.seek(0)
        head = f.read(3_000_000)
    out = tmp_path / name
    out.write_bytes(head)  # an interrupted download, resumed
    subprocess.run([curl, "-sS", "--fail", "-C", "-", "-o", str(out), f"{server.base}/{name}"], check=True)
    assert sha256_file(out) == sha256_file(tree / name)
    resumed = [e for e in server.access_log() if e.get("range") == "bytes=3000000-"]
    assert resumed and resumed[-1]["status"] == 206


def test_wget_continue(server, tree, tmp_path, default_model_path):
    wget = need_tool("wget")
    name = default_model_path.name
    out_dir = tmp_path / "w"
    out_dir.mkdir()
    with open(tree / name, "rb") as f:
        (out_dir / name).write_bytes(f.read(5_000_000))
    subprocess.run([wget, "-q", "-c", "-P", str(out_dir), f"{server.base}/{name}"], check=True, timeout=120)
    assert sha256_file(out_dir / name) == sha256_file(tree / name)
    subprocess.run([wget, "-q", "-P", str(out_dir), "-O", str(out_dir / "tok.bin"), f"{server.base}/tokenizer.bin"],
                   check=True, timeout=60)
    assert (out_dir / "tok.bin").read_bytes() == (tree / "tokenizer.bin").read_bytes()


def test_raw_response_framing_for_http11(server):
    """A keep-alive HTTP/1.1 response is framed by Content-Length (no chunking) so byte counts are exact."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /data.dat HTTP/1.1\r\nHost: x\r\n\r\nGET /empty.dat HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        raw = read_until_close(sock, 10)
    status, headers, rest = split_response(raw)
    assert status == 200 and "transfer-encoding" not in headers and rest[: len(DATA)] == DATA
    status2, headers2, body2 = split_response(rest[len(DATA):])
    assert status2 == 200 and headers2["content-length"] == "0" and body2 == b""
