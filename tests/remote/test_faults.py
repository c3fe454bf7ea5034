"""Hostile and broken servers, client side: a --sha256 that streaming must honour, servers without digests, bearer
tokens and 401s, and boots that no digest covers (which say so), against real server processes on loopback."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from support.serverprocs import assert_one_line_error, clean_env, netboot

pytestmark = pytest.mark.network  # real server processes on loopback

UNVERIFIED = "booting unverified"
STREAMING_UNVERIFIED = "streaming unverified"
RUN = ("-p", "hello", "-n", "4", "--temperature", "0")
STREAM = ("--max-memory", "300MB")


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A directory with one small GGUF model that carries its tokenizer."""
    from support.synthetic import SMALL, byte_vocab, random_weights, write_gguf

    from netboot.tensors.ggml import GGMLType

    root = tmp_path_factory.mktemp("faults")
    vocab = [p.decode() for p in byte_vocab(SMALL.vocab)]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": vocab,
            "tokenizer.ggml.scores": [float(-i) for i in range(len(vocab))],
            "tokenizer.ggml.token_type": [1] * len(vocab), "tokenizer.ggml.bos_token_id": 1}
    write_gguf(root / "tiny.gguf", SMALL, random_weights(SMALL, np.random.default_rng(3)), GGMLType.Q8_0, meta)
    return root


@pytest.fixture(scope="module")
def local_text(models) -> str:
    result = netboot("run", models / "tiny.gguf", *RUN)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- --sha256 while streaming -------------------------------------------------------------------------------------


def test_streaming_checks_sha256_against_the_catalog(tmp_path, servers, models, local_text):
    srv = servers.netboot_serve(models)
    url = srv.url("tiny.gguf")
    right = sha256_of(models / "tiny.gguf")
    ok = netboot("run", url, *RUN, *STREAM, "--sha256", right, "--cache-dir", tmp_path / "c")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == local_text
    assert UNVERIFIED not in ok.stderr and STREAMING_UNVERIFIED not in ok.stderr

    wrong = netboot("run", url, *RUN, *STREAM, "--sha256", "0" * 64, "--cache-dir", tmp_path / "c")
    assert_one_line_error(wrong, "sha256 mismatch", "0" * 64, right)


def test_a_lying_server_with_a_wrong_sha256_never_gives_text(tmp_path, servers, models):
    liar = servers.fault("lie", models, "--catalog")  # the catalog's file sha256, no layer digests
    result = netboot("run", liar.url("tiny.gguf"), *RUN, *STREAM, "--sha256", "1" * 64)
    assert result.stdout == ""
    assert_one_line_error(result, "sha256")
    # Even the right sha256 cannot be proven without the layers' digests: refused, not trusted.
    right = netboot("run", liar.url("tiny.gguf"), *RUN, *STREAM, "--sha256", sha256_of(models / "tiny.gguf"))
    assert_one_line_error(right, "--sha256 cannot be checked while streaming")


def test_sha256_without_a_catalog_is_refused_when_streaming(tmp_path, servers, models):
    nginx = servers.nginx(models)
    result = netboot("run", nginx.url("tiny.gguf"), *RUN, *STREAM, "--sha256", sha256_of(models / "tiny.gguf"))
    assert_one_line_error(result, "--sha256 cannot be checked while streaming", "download it instead")


def test_streaming_without_digests_says_so_once(tmp_path, servers, models, local_text):
    nginx = servers.nginx(models)
    result = netboot("run", nginx.url("tiny.gguf"), *RUN, *STREAM)
    assert result.returncode == 0, result.stderr
    assert result.stdout == local_text
    assert result.stderr.count(STREAMING_UNVERIFIED) == 1, result.stderr


# -- downloads no digest covers -----------------------------------------------------------------------------------


def test_a_download_without_catalog_or_sha256_says_it_is_unverified(tmp_path, servers, models):
    srv = servers.fault("ok", models)
    url = srv.url("tiny.gguf")
    plain = netboot("pull", url, "--cache-dir", tmp_path / "a", "--quiet")
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.count(UNVERIFIED) == 1 and url in plain.stderr, plain.stderr

    pinned = netboot("pull", url, "--cache-dir", tmp_path / "b", "--sha256", sha256_of(models / "tiny.gguf"))
    assert pinned.returncode == 0 and pinned.stderr == "", pinned.stderr
    wrong = netboot("pull", url, "--cache-dir", tmp_path / "c", "--sha256", "2" * 64)
    assert_one_line_error(wrong, "sha256 mismatch")

    catalog = servers.netboot_serve(models)
    listed = netboot("pull", catalog.url("tiny.gguf"), "--cache-dir", tmp_path / "d", "--quiet")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr


# -- tokens -------------------------------------------------------------------------------------------------------


def test_token_on_pull_run_and_info(tmp_path, servers, models, local_text):
    srv = servers.netboot_serve(models, "--token", "s3cret")
    url = srv.url("tiny.gguf")

    missing = netboot("pull", url, "--cache-dir", tmp_path / "a", "--retries", "0")
    assert_one_line_error(missing, "401", "needs a token", "--token", "NETBOOT_TOKEN")
    refused = netboot("pull", url, "--cache-dir", tmp_path / "a", "--token", "nope", "--retries", "0")
    assert_one_line_error(refused, "401", "refused the token")

    pulled = netboot("pull", url, "--cache-dir", tmp_path / "a", "--token", "s3cret", "--quiet")
    assert pulled.returncode == 0 and pulled.stderr == "", pulled.stderr  # the catalog was read: verified
    from_env = netboot("info", url, "--cache-dir", tmp_path / "b", env=clean_env(NETBOOT_TOKEN="s3cret"))
    assert from_env.returncode == 0 and from_env.stderr == "", from_env.stderr

    streamed = netboot("run", url, *RUN, *STREAM, "--token", "s3cret", "--sha256", sha256_of(models / "tiny.gguf"))
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == local_text and streamed.stderr == ""
    no_token = netboot("run", url, *RUN, *STREAM, "--retries", "0")
    assert_one_line_error(no_token, "401", "needs a token")


# -- slow and silent servers ----------------------------------------------------------------------------------------


def test_a_trickling_server_is_stalled_retried_then_reported(tmp_path, servers, models):
    srv = servers.fault("trickle", models, "--interval", "0.5")
    start = time.monotonic()
    result = netboot("pull", srv.url("tiny.gguf"), "--cache-dir", tmp_path / "c", "--timeout", "2", "--retries", "5",
                     timeout=60)
    elapsed = time.monotonic() - start
    *notes, error = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert error.startswith("netboot: error: ") and "stalled" in error and "--min-rate" in error, error
    assert "gave up after" in error
    assert notes and all("trying again" in n for n in notes), notes  # not silent, on a pipe too
    assert elapsed < 20, elapsed  # patience: 3 timeouts without progress, whatever the retries left
    gets = [e for e in srv.log() if e["event"] == "response" and e["path"] == "/tiny.gguf"]
    assert len(gets) >= 2  # retried (resuming) before it was reported


@pytest.mark.slow
def test_a_silent_server_ends_within_about_30_s_with_the_defaults(tmp_path, servers, models):
    srv = servers.fault("stall-headers", models)
    start = time.monotonic()
    result = netboot("pull", srv.url("tiny.gguf"), "--cache-dir", tmp_path / "c", timeout=90)
    elapsed = time.monotonic() - start
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    *notes, error = result.stderr.strip().splitlines()
    assert "read timeout" in error and "gave up after" in error, error
    assert notes and all("trying again" in n for n in notes), notes
    assert elapsed < 40, elapsed


def test_clients_started_by_the_tests_keep_netboot_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NETBOOT_CACHE", str(tmp_path / "session-cache"))
    assert clean_env()["NETBOOT_CACHE"] == str(tmp_path / "session-cache")  # kernels are not compiled into ~/.cache
    assert "NETBOOT_CACHE" not in clean_env(tmp_path / "home")  # a test of what lands under HOME


def test_a_trickling_server_is_caught_while_streaming(tmp_path, servers, models):
    srv = servers.fault("trickle", models, "--interval", "0.5")
    start = time.monotonic()
    result = netboot("run", srv.url("tiny.gguf"), *RUN, *STREAM, "--timeout", "2", "--retries", "5", timeout=60)
    assert time.monotonic() - start < 25
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("netboot: error: ") and "stalled" in error and "gave up after" in error, error
