"""Network boot, client side, against real server processes on loopback: netboot's own fault servers
(tests/support/faultservers.py), nginx, python -m http.server and `netboot serve`; the client runs as
`python -m netboot` processes (or in threads, for the concurrency test)."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURES
from support.serverprocs import (
    Server,
    assert_one_line_error,
    clean_env,
    free_port,
    netboot,
    netboot_bg,
    wait_for,
)

pytestmark = pytest.mark.network  # real server processes on loopback

MiB = 1 << 20


# -- helpers -----------------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def all_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def cache_state(cache: Path) -> dict[str, list[str]]:
    return {d: all_files(cache / d) for d in ("blobs", "files", "tmp")}


def part_done(cache: Path) -> int:
    """Bytes a download in progress has recorded as received (its resume state)."""
    total = 0
    for state in (cache / "tmp").glob("*.part.json"):
        try:
            total += sum(e - s for s, e in json.loads(state.read_text())["done"])
        except (OSError, ValueError, KeyError):
            pass
    return total


def nginx_log(server: Server) -> list[tuple[str, str, int, int, str, str]]:
    """(method, uri, status, body bytes, Range, If-None-Match) per request."""
    rows = []
    for line in server.log_path.read_text().splitlines():
        m = re.match(r'(\S+) (\S+) (\d+) (\d+) "([^"]*)" "([^"]*)"', line)
        if m:
            rows.append((m.group(1), m.group(2), int(m.group(3)), int(m.group(4)), m.group(5), m.group(6)))
    return rows


def responses(server: Server, path: str) -> list[dict]:
    return [e for e in server.log() if e["event"] == "response" and e["path"] == path]


@pytest.fixture(scope="module")
def llama2c_dir(tmp_path_factory) -> Path:
    """A small llama2.c model and its tokenizer.bin, and a SafeTensors directory (2 shards) of the same weights."""
    from support.synthetic import (
        SMALL,
        byte_vocab,
        random_weights,
        write_llama2c,
        write_llama2c_tokenizer,
        write_safetensors,
    )

    root = tmp_path_factory.mktemp("models")
    weights = random_weights(SMALL, np.random.default_rng(11))
    write_llama2c(root / "stories.bin", SMALL, weights)
    write_llama2c_tokenizer(root / "tokenizer.bin", byte_vocab(SMALL.vocab))
    write_safetensors(root / "hf", SMALL, weights, shards=2)
    return root


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory) -> Path:
    from support.synthetic import SMALL, write_random_gguf

    from netboot.tensors.ggml import GGMLType

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_random_gguf(path, SMALL, GGMLType.Q8_0, np.random.default_rng(3))
    return path


RUN = ("-p", "hello", "-n", "6", "--temperature", "0")


def pulled(result: subprocess.CompletedProcess) -> Path:
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


# -- transfers ---------------------------------------------------------------------------------------------------


def test_parallel_ranged_download_from_nginx(tmp_path, servers):
    blob = random_file(tmp_path / "www" / "blob.gguf", 24 * MiB + 123)
    nginx = servers.nginx(blob.parent, limit_rate="25m")  # per connection: more connections fill the link
    cache = tmp_path / "cache"
    path = pulled(netboot("pull", nginx.url("blob.gguf"), "--cache-dir", cache, "--connections", "4"))
    assert path.name == "blob.gguf" and cache in path.parents
    assert sha256_of(path) == sha256_of(blob)
    gets = [r for r in nginx_log(nginx) if r[1] == "/blob.gguf"]
    assert all(r[2] == 206 for r in gets), gets
    assert len({r[4] for r in gets}) >= 4, gets  # the first stream was split over several connections
    # Every byte about once: the first stream, cut short, may have had a few MB in flight when it was closed.
    assert blob.stat().st_size <= sum(r[3] for r in gets) <= blob.stat().st_size + 8 * MiB
    assert cache_state(cache)["blobs"] == [sha256_of(blob)]
    assert not [p for p in cache_state(cache)["tmp"] if not p.endswith(".lock")]


def test_python_http_server_without_ranges_is_one_stream(tmp_path, servers):
    blob = random_file(tmp_path / "www" / "blob.bin", 9 * MiB + 7, seed=1)
    srv = servers.http_server(blob.parent)
    path = pulled(netboot("pull", srv.url("blob.bin"), "--cache-dir", tmp_path / "cache"))
    assert sha256_of(path) == sha256_of(blob)
    gets = [line for line in srv.output if "GET /blob.bin" in line]
    assert len(gets) == 1 and '" 200 ' in gets[0], srv.output


def test_wrong_content_range_falls_back_to_one_stream(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 20 * MiB, seed=2)
    srv = servers.fault("badrange", blob, "--rate", "20000000")
    path = pulled(netboot("pull", srv.url("blob.bin"), "--cache-dir", tmp_path / "cache"))
    assert sha256_of(path) == sha256_of(blob)
    log = responses(srv, "/blob.bin")
    assert log[-1]["range"] is None and log[-1]["status"] == 200  # the whole file in one stream, after the lie


def test_resume_after_the_server_is_killed_and_restarted(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 6 * MiB, seed=3)
    size = blob.stat().st_size
    srv = servers.fault("throttle", blob, "--rate", "3000000")
    cache = tmp_path / "cache"
    client = netboot_bg("pull", srv.url("blob.bin"), "--cache-dir", cache, "--connections", "1", "--retries", "0")
    wait_for(lambda: part_done(cache) >= MiB, 20, "a partial download")
    srv.kill()
    out, err = client.communicate(timeout=30)
    assert client.returncode == 1 and "netboot: error:" in err and "Traceback" not in err, err
    state = cache_state(cache)
    assert state["blobs"] == [] and state["files"] == []  # nothing half-done where a boot would find it
    had = part_done(cache)
    assert MiB <= had < size

    srv2 = servers.fault("ok", blob, port=srv.port)
    path = pulled(netboot("pull", srv2.url("blob.bin"), "--cache-dir", cache, "--connections", "1"))
    assert sha256_of(path) == sha256_of(blob)
    log = responses(srv2, "/blob.bin")
    assert len(log) == 1 and log[0]["status"] == 206, log
    assert log[0]["range"] == f"bytes={had}-" and log[0]["if_range"]
    done = [e for e in srv2.log() if e["event"] == "done" and e["path"] == "/blob.bin"]
    assert done[0]["sent"] == size - had  # only the missing bytes crossed the wire


def test_parallel_transfer_survives_a_server_restart(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 16 * MiB, seed=4)
    size = blob.stat().st_size
    srv = servers.fault("throttle", blob, "--rate", "1500000")
    cache = tmp_path / "cache"
    client = netboot_bg("pull", srv.url("blob.bin"), "--cache-dir", cache, "--connections", "4", "--retries", "8",
                        "--timeout", "5")
    wait_for(lambda: part_done(cache) >= 2 * MiB, 20, "a partial download")
    srv.kill()
    time.sleep(0.3)
    srv2 = servers.fault("ok", blob, port=srv.port)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert sha256_of(Path(out.strip())) == sha256_of(blob)
    log = responses(srv2, "/blob.bin")
    assert log and all(e["status"] == 206 for e in log)
    assert sum(e["length"] for e in log) <= size - 2 * MiB  # resumed, not restarted


def test_a_changed_file_restarts_from_zero(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 6 * MiB, seed=5)
    srv = servers.fault("throttle", blob, "--rate", "3000000")
    cache = tmp_path / "cache"
    client = netboot_bg("pull", srv.url("blob.bin"), "--cache-dir", cache, "--connections", "1")
    wait_for(lambda: part_done(cache) >= MiB, 20, "a partial download")
    client.send_signal(signal.SIGKILL)  # a crash
    client.wait()
    srv.kill()
    assert cache_state(cache)["blobs"] == [] and cache_state(cache)["files"] == []
    random_file(blob, 6 * MiB + 5, seed=6)  # new content, new ETag
    srv2 = servers.fault("ok", blob, port=srv.port)
    path = pulled(netboot("pull", srv2.url("blob.bin"), "--cache-dir", cache, "--connections", "1"))
    assert sha256_of(path) == sha256_of(blob)
    log = responses(srv2, "/blob.bin")
    assert log[0]["if_range"] and log[0]["status"] == 200  # If-Range did not match: the whole new file


def test_a_lying_server_is_caught_and_nothing_is_cached(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 5 * MiB, seed=7)
    srv = servers.fault("lie", blob, "--catalog")
    cache = tmp_path / "cache"
    line = assert_one_line_error(netboot("pull", srv.url("blob.bin"), "--cache-dir", cache), "sha256 mismatch",
                                 sha256_of(blob))
    assert re.search(r"got [0-9a-f]{64}", line)
    assert cache_state(cache) == {"blobs": [], "files": [], "tmp": [p for p in cache_state(cache)["tmp"]
                                                                   if p.endswith(".lock")]}
    # Without a catalog, --sha256 pins the bytes; straight into memory too.
    plain = servers.fault("lie", blob)
    assert_one_line_error(netboot("pull", plain.url("blob.bin"), "--cache-dir", cache, "--sha256", sha256_of(blob)),
                          "sha256 mismatch")
    assert cache_state(cache)["blobs"] == []
    assert_one_line_error(netboot("info", plain.url("blob.bin"), "--no-disk", "--sha256", sha256_of(blob)),
                          "sha256 mismatch")


def test_content_length_is_checked_against_the_catalog(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 2 * MiB, seed=18)
    srv = servers.fault("ok", blob, "--catalog", "--catalog-wrong-size")
    cache = tmp_path / "cache"
    size = blob.stat().st_size
    assert_one_line_error(netboot("pull", srv.url("blob.bin"), "--cache-dir", cache),
                          f"the server sends {size} bytes, the catalog says {size + 1}")
    assert cache_state(cache)["blobs"] == [] and cache_state(cache)["files"] == []


@pytest.mark.parametrize("mode", ["stall", "stall-headers"])
def test_a_stalled_connection_times_out(tmp_path, servers, mode):
    blob = random_file(tmp_path / "blob.bin", 4 * MiB, seed=8)
    srv = servers.fault(mode, blob)
    start = time.monotonic()
    assert_one_line_error(netboot("pull", srv.url("blob.bin"), "--cache-dir", tmp_path / "c", "--timeout", "1",
                                  "--retries", "1", timeout=30), "read timeout", srv.url("blob.bin"))
    assert time.monotonic() - start < 15


def test_404_and_html_error_pages_are_never_a_model(tmp_path, servers):
    blob = random_file(tmp_path / "m.gguf", 1000, seed=9)
    cache = tmp_path / "cache"
    missing = servers.fault("html404", blob)
    assert_one_line_error(netboot("pull", missing.url("m.gguf"), "--cache-dir", cache), "HTTP 404",
                          missing.url("m.gguf"))
    page = servers.fault("html", blob)
    assert_one_line_error(netboot("run", page.url("m.gguf"), "-p", "hi", "--cache-dir", cache), "HTML page",
                          page.url("m.gguf"))
    assert cache_state(cache)["blobs"] == [] and cache_state(cache)["files"] == []


def test_redirects_are_followed_and_bounded(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 10 * MiB, seed=10)
    srv = servers.fault("redirect", blob)
    path = pulled(netboot("pull", srv.url("blob.bin"), "--cache-dir", tmp_path / "cache"))
    assert sha256_of(path) == sha256_of(blob)
    assert_one_line_error(netboot("pull", srv.url("loop/x.bin"), "--cache-dir", tmp_path / "cache"),
                          "more than 10 redirects")


def test_fifty_concurrent_downloads_all_verified(tmp_path, servers):
    from netboot.formats.layout import ModelLayout
    from netboot.remote.fetch import FetchOptions, pull

    blob = random_file(tmp_path / "www" / "m.gguf", 6 * MiB, seed=12)
    expected = sha256_of(blob)
    nginx = servers.nginx(blob.parent)
    url = nginx.url("m.gguf")
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            cache = tmp_path / ("shared" if i >= 40 else f"c{i}")
            options = FetchOptions(cache_dir=cache, progress="off", timeout=20)
            results[i] = str(pull(url, options=options, layout=ModelLayout()).path)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    start = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert time.monotonic() - start < 60
    assert len(results) == 50
    for i, path in results.items():
        assert sha256_of(Path(path)) == expected, i
    assert len({results[i] for i in range(40, 50)}) == 1  # the ten that share a cache share one copy
    rows = [r for r in nginx_log(nginx) if r[1] == "/m.gguf"]
    body = sum(r[3] for r in rows)
    assert body == 41 * blob.stat().st_size  # 40 private caches + one transfer for the shared one
    assert sum(1 for r in rows if r[2] == 304) >= 9


# -- the cache ---------------------------------------------------------------------------------------------------


def test_cache_hit_sends_no_body(tmp_path, servers):
    blob = random_file(tmp_path / "www" / "m.gguf", 5 * MiB, seed=13)
    cache = tmp_path / "cache"
    nginx = servers.nginx(blob.parent)
    first = pulled(netboot("pull", nginx.url("m.gguf"), "--cache-dir", cache))
    again = pulled(netboot("pull", nginx.url("m.gguf"), "--cache-dir", cache))
    assert first == again
    last = [r for r in nginx_log(nginx) if r[1] == "/m.gguf"][-1]
    assert last[2] == 304 and last[3] == 0 and last[5]  # If-None-Match -> 304, no body

    # With a catalog the sha256 is known: a cached blob needs no request for the file at all.
    cat = servers.fault("ok", blob, "--catalog")
    pulled(netboot("pull", cat.url("m.gguf"), "--cache-dir", cache))
    assert [e["path"] for e in cat.log() if e["event"] == "response"] == ["/models"]
    assert len(cache_state(cache)["blobs"]) == 1  # one blob for the two URLs


def test_the_cached_copy_is_used_when_the_server_is_down(tmp_path, servers):
    blob = random_file(tmp_path / "m.gguf", 3 * MiB, seed=14)
    cache = tmp_path / "cache"
    srv = servers.fault("ok", blob)
    url = srv.url("m.gguf")
    path = pulled(netboot("pull", url, "--cache-dir", cache))
    srv.kill()
    again = netboot("pull", url, "--cache-dir", cache, "--retries", "0")
    assert pulled(again) == path
    assert f"netboot: {url} unreachable (connection refused); using the cached copy" in again.stderr


def test_cache_ls_rm_prune(tmp_path, servers):
    a = random_file(tmp_path / "www" / "a.bin", 2 * MiB, seed=15)
    b = random_file(tmp_path / "www" / "b.gguf", 3 * MiB, seed=16)
    srv = servers.fault("ok", a.parent)
    cache = tmp_path / "cache"
    c = ("--cache-dir", cache)
    pulled(netboot("pull", srv.url("a.bin"), *c))
    pulled(netboot("pull", srv.url("b.gguf"), *c))
    ls = netboot("cache", "ls", *c)
    assert ls.returncode == 0, ls.stderr
    assert srv.url("a.bin") in ls.stdout and srv.url("b.gguf") in ls.stdout
    assert sha256_of(a)[:12] in ls.stdout and "2.1 MB" in ls.stdout and "3.1 MB" in ls.stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", ls.stdout)

    assert netboot("cache", "rm", srv.url("a.bin"), *c).returncode == 0
    assert cache_state(cache)["blobs"] == [sha256_of(b)]
    assert all("a.bin" not in p for p in cache_state(cache)["files"])
    assert netboot("cache", "rm", sha256_of(b)[:8], *c).returncode == 0
    assert cache_state(cache)["blobs"] == [] and cache_state(cache)["files"] == []
    assert_one_line_error(netboot("cache", "rm", srv.url("a.bin"), *c), "not in the cache")

    # prune: leftovers of an interrupted download and an unreferenced blob go; what is in use stays.
    pulled(netboot("pull", srv.url("a.bin"), *c))
    (cache / "tmp" / "0123abcd.part").write_bytes(b"x" * 1000)
    (cache / "tmp" / "0123abcd.part.json").write_text("{}")
    (cache / "blobs" / ("0" * 64)).write_bytes(b"orphan")
    pruned = netboot("cache", "prune", *c)
    assert pruned.returncode == 0 and "pruned 3 file(s)" in pruned.stdout, pruned.stdout + pruned.stderr
    assert cache_state(cache)["blobs"] == [sha256_of(a)]
    assert [p for p in cache_state(cache)["tmp"] if not p.endswith(".lock")] == []

    index = json.loads((cache / "index.json").read_text())
    for entry in index["files"].values():
        entry["last_used"] -= 3 * 86400
    (cache / "index.json").write_text(json.dumps(index))
    pulled(netboot("pull", srv.url("b.gguf"), *c))
    assert netboot("cache", "prune", "--older-than", "2", *c).returncode == 0
    assert cache_state(cache)["blobs"] == [sha256_of(b)]  # a was last used 3 days ago
    assert netboot("cache", "prune", "--max-size", "1M", *c).returncode == 0
    assert cache_state(cache)["blobs"] == [] and "no models" in netboot("cache", "ls", *c).stdout


# -- booting -----------------------------------------------------------------------------------------------------


def test_run_over_http_gives_the_same_text_as_from_disk(tmp_path, servers, llama2c_dir, gguf_file):
    local = netboot("run", llama2c_dir / "stories.bin", *RUN)
    assert local.returncode == 0, local.stderr
    nginx = servers.nginx(llama2c_dir)
    cache = tmp_path / "cache"
    remote = netboot("run", nginx.url("stories.bin"), *RUN, "--cache-dir", cache)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and remote.stdout.strip()
    # No terminal: no progress bar; nginx has no catalog, so the one line says nothing checks the bytes.
    assert remote.stderr == (f"netboot: {nginx.url('stories.bin')}: no catalog entry and no --sha256: booting "
                             "unverified (nothing to check the bytes against)\n")
    files = cache_state(cache)["files"]
    assert any(p.endswith("/stories.bin") for p in files) and any(p.endswith("/tokenizer.bin") for p in files)

    srv = servers.http_server(gguf_file.parent)
    info_local = json.loads(netboot("info", gguf_file, "--json").stdout)
    info_remote = netboot("info", srv.url("tiny.gguf"), "--json", "--cache-dir", cache)
    assert info_remote.returncode == 0, info_remote.stderr
    skip = ("path", "tokenizer")  # both name the local file
    assert {k: v for k, v in json.loads(info_remote.stdout).items() if k not in skip} == {
        k: v for k, v in info_local.items() if k not in skip}


def test_safetensors_directory_url_with_shards_and_tokenizer_url(tmp_path, servers, llama2c_dir):
    hf = llama2c_dir / "hf"
    local = netboot("run", hf, *RUN, "--tokenizer", llama2c_dir / "tokenizer.bin")
    assert local.returncode == 0, local.stderr
    srv = servers.fault("ok", llama2c_dir)
    remote = netboot("run", srv.url("hf/"), *RUN, "--tokenizer", srv.url("tokenizer.bin"),
                     "--cache-dir", tmp_path / "cache")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    got = {e["path"] for e in srv.log() if e["event"] == "response" and e["status"] in (200, 206)}
    assert {"/hf/config.json", "/hf/model.safetensors.index.json", "/hf/model-00001-of-00002.safetensors",
            "/hf/model-00002-of-00002.safetensors", "/tokenizer.bin"} <= got


def test_python_api_loads_urls(tmp_path, servers, gguf_file):
    import netboot

    srv = servers.fault("ok", gguf_file, "--catalog")
    url = srv.url(gguf_file.name)
    reference = netboot.load(gguf_file)
    for kwargs in ({"cache_dir": tmp_path / "cache"}, {"no_disk": True}):
        loaded = netboot.load(url, progress="off", **kwargs)
        assert loaded.file.config == reference.file.config
        name = "token_embd.weight"
        assert np.array_equal(loaded.file.tensors[name].data, reference.file.tensors[name].data)
    assert str(netboot.loader.resolve(url, cache_dir=tmp_path / "cache")).startswith(str(tmp_path / "cache"))


@pytest.mark.slow
def test_no_disk_boot_writes_nothing(tmp_path, servers, llama2c_dir, gguf_file):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home)
    shm_before = set(os.listdir("/dev/shm"))
    local = netboot("run", llama2c_dir / "stories.bin", *RUN)
    srv = servers.fault("ok", llama2c_dir, "--catalog")
    remote = netboot("run", srv.url("stories.bin"), *RUN, "--no-disk", "--cache-dir", tmp_path / "cache", env=env)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    plain = servers.http_server(gguf_file.parent)
    info = netboot("info", plain.url("tiny.gguf"), "--no-disk", "--json", env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["config"] == json.loads(netboot("info", gguf_file, "--json").stdout)["config"]
    # Only the compiled kernels' cache may be written (it holds no model bytes).
    assert [f for f in all_files(home) if not f.startswith(".cache/netboot/kernels/")] == []
    assert not (tmp_path / "cache").exists()
    assert {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("netboot-")} == set()


def test_fallback_to_a_local_path_and_to_a_mirror(tmp_path, servers, llama2c_dir):
    local = netboot("run", llama2c_dir / "stories.bin", *RUN)
    dead = f"http://127.0.0.1:{free_port()}/stories.bin"
    cache = ("--cache-dir", tmp_path / "cache")
    result = netboot("run", dead, *RUN, *cache, "--retries", "0", "--fallback", llama2c_dir / "stories.bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout == local.stdout
    assert result.stderr.strip() == (f"netboot: {dead} failed (connection refused); using fallback "
                                     f"{llama2c_dir / 'stories.bin'}")

    broken = servers.fault("error500", llama2c_dir)
    mirror = servers.fault("ok", llama2c_dir)
    result = netboot("run", broken.url("stories.bin"), *RUN, *cache, "--retries", "1", "--fallback",
                     mirror.url("stories.bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == local.stdout
    assert "failed (HTTP 500 Internal Server Error); using fallback " + mirror.url("stories.bin") in result.stderr

    liar = servers.fault("lie", llama2c_dir, "--catalog")
    fresh = ("--cache-dir", tmp_path / "fresh")  # (the other cache holds the catalog's sha256: no request at all)
    result = netboot("run", liar.url("stories.bin"), *RUN, *fresh, "--fallback", mirror.url("stories.bin"))
    assert result.returncode == 0 and result.stdout == local.stdout, result.stderr
    assert "sha256 mismatch" in result.stderr and "using fallback" in result.stderr

    everything = netboot("run", dead, *RUN, *cache, "--retries", "0", "--fallback", tmp_path / "nope.bin")
    assert_one_line_error(everything, "connection refused", "nope.bin")


def test_progress_on_stderr(tmp_path, servers):
    blob = random_file(tmp_path / "blob.bin", 3 * MiB, seed=17)
    srv = servers.fault("throttle", blob, "--rate", "2000000")
    plain = netboot("pull", srv.url("blob.bin"), "--cache-dir", tmp_path / "a", "--progress")
    assert plain.returncode == 0, plain.stderr
    assert re.search(r"netboot: blob\.bin: [\d.]+ MB / 3\.1 MB \(\d+%\), [\d.]+ MB/s, ETA \d+:\d\d", plain.stderr), \
        plain.stderr
    fast = servers.fault("ok", blob)
    quiet = netboot("pull", fast.url("blob.bin"), "--cache-dir", tmp_path / "b", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr.count("netboot: ") == 1 and "booting unverified" in quiet.stderr

    # On a terminal: tqdm's bar, with bytes, MB/s and ETA.
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "netboot", "pull", fast.url("blob.bin"), "--cache-dir",
                             str(tmp_path / "c")], stdout=subprocess.PIPE, stderr=slave, env=clean_env())
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = proc.communicate(timeout=60)[0]
    reader.join(10)
    os.close(master)
    assert proc.returncode == 0 and out.strip()
    text = seen.decode(errors="replace")
    assert "blob.bin" in text and "100%" in text and "MB/s" in text and "3.15M/3.15M" in text, text


def test_default_model_boots_over_http(tmp_path, servers, default_model_path):
    args = ("-p", "The capital of France is", "-n", "4", "--temperature", "0")
    local = netboot("run", default_model_path, *args)
    assert local.returncode == 0, local.stderr
    nginx = servers.nginx(default_model_path.parent)
    remote = netboot("run", nginx.url(default_model_path.name), *args, "--cache-dir", tmp_path / "cache")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    fixture = json.loads((FIXTURES / "gemma3_270m" / "greedy.json").read_text())
    assert cache_state(tmp_path / "cache")["blobs"] == [fixture["model_sha256"]]


def test_netboot_serve_catalog_pins_the_sha256(tmp_path, servers, llama2c_dir):
    srv = servers.netboot_serve(llama2c_dir)
    local = netboot("run", llama2c_dir / "stories.bin", *RUN)
    cache = tmp_path / "cache"
    remote = netboot("run", srv.url("stories.bin"), *RUN, "--cache-dir", cache)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert sha256_of(llama2c_dir / "stories.bin") in cache_state(cache)["blobs"]

    def access_log() -> list[dict]:
        return [json.loads(line) for line in srv.output if line.startswith("{")]

    seen = len(access_log())
    again = netboot("run", srv.url("stories.bin"), *RUN, "--cache-dir", cache)
    assert again.returncode == 0 and again.stdout == local.stdout, again.stderr
    assert [r["path"] for r in access_log()[seen:]] == ["/models"]  # sha256 known and cached: no file request

    # A SafeTensors directory URL, its files listed by the catalog.
    hf = netboot("run", llama2c_dir / "hf", *RUN, "--tokenizer", llama2c_dir / "tokenizer.bin")
    remote_hf = netboot("run", srv.url("hf/"), *RUN, "--tokenizer", srv.url("tokenizer.bin"), "--cache-dir", cache)
    assert remote_hf.returncode == 0, remote_hf.stderr
    assert remote_hf.stdout == hf.stdout
