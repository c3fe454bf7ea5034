"""Layer streaming under --max-memory, against real processes: `netboot run` children whose peak RSS the test reads
from the kernel (os.wait4), model servers on loopback (`netboot serve`, python -m http.server, the fault servers of
tests/support/faultservers.py), the real default model, and a multi-GB synthetic Llama written by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.serverprocs import clean_env, free_port

from netboot.tensors.ggml import GGMLType

PROMPT = ("The history of computing is a story of machines that grew smaller and faster while the problems they "
          "solved grew larger.")
RUN = ("-p", PROMPT, "-n", "8", "--temperature", "0")
MB = 10**6


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes, as the kernel accounted the child

    def error_line(self) -> str:
        assert self.returncode == 1, (self.returncode, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("netboot: error: "), self.stderr
        return lines[-1]


# Runs a module or script and, at exit, reports the process's own memory high-water mark as the kernel keeps it
# (VmHWM). Not ru_maxrss: a child started by fork/vfork and exec inherits its parent's mark, and pytest's
# process holds the default model.
REPORT_PEAK = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\nVMHWM {hwm * 1024}\\n")
atexit.register(report)
target = sys.argv[1]
sys.argv = sys.argv[1:]
if target == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


def child_env() -> dict[str, str]:
    """The children share the test session's compiled kernels (NETBOOT_CACHE kept): compiling them is a first run's
    cost, which a budget test would otherwise measure."""
    return clean_env(**{k: v for k, v in os.environ.items() if k == "NETBOOT_CACHE"})


def measured(*args: object, timeout: float = 300) -> Measured:
    """`python ARGS...` as a child process, with the peak RSS it reports for itself at exit."""
    proc = subprocess.run([sys.executable, "-c", REPORT_PEAK, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(), check=False)
    body, _, tail = proc.stderr.rpartition("\nVMHWM ")
    assert tail, f"the child did not report its peak: {proc.stderr}"
    return Measured(proc.returncode, proc.stdout, body.strip() + "\n" if body.strip() else "", int(tail))


def run(*args: object, **kw) -> Measured:
    return measured("-m", "netboot", "run", *args, **kw)


@pytest.fixture(autouse=True)
def test_process_gives_back_llvm():
    """The children's start is measured as on a machine where netboot runs alone: this test process (which has
    loaded numba) unmaps its LLVM pages, so that a child's eviction of the library from the page cache works."""
    from netboot import memory

    memory.release_library_code("libllvmlite.so")


@pytest.fixture(scope="module")
def resident_text(default_model_path) -> str:
    result = run(default_model_path, *RUN)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- disk ----------------------------------------------------------------------------------------------------------


def test_default_model_streams_from_disk_under_160_mb(default_model_path, resident_text):
    result = run(default_model_path, *RUN, "--max-memory", "160MB", "--explain")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    assert result.peak_rss < 160 * MB, result.peak_rss
    explain = result.stderr
    assert "memory budget 160.0 MB" in explain
    assert f"streamed from disk ({default_model_path})" in explain
    streamed = [line for line in explain.splitlines() if line.startswith("layer") and "streamed" in line]
    assert streamed, explain  # 253 MB do not fit: most layers stream
    assert "embedding/output table" in explain


def cached_bytes(path: Path) -> int:
    """Bytes of the file in the page cache (mincore over a map of it)."""
    import ctypes
    import mmap

    size = path.stat().st_size
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m:
        address = np.frombuffer(m, dtype=np.uint8).ctypes.data
        pages = -(-size // mmap.PAGESIZE)
        vec = (ctypes.c_ubyte * pages)()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        assert libc.mincore(address, size, vec) == 0, ctypes.get_errno()
        return sum(b & 1 for b in vec) * mmap.PAGESIZE


def test_disk_streaming_does_not_fill_the_page_cache(tmp_path, default_model_path, resident_text):
    model = tmp_path / default_model_path.name
    model.write_bytes(default_model_path.read_bytes())
    fd = os.open(model, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # a copy nobody maps: it leaves the page cache
    os.close(fd)
    before = cached_bytes(model)
    result = run(model, *RUN, "--max-memory", "160MB")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    # The header (6.5 MB read through a memory map, with the kernel's read-ahead: 16 MiB measured) is all that may
    # stay: not the 253 MB streamed 9 times.
    assert cached_bytes(model) - before < model.stat().st_size // 8, (before, cached_bytes(model))


def test_prefetch_off_gives_the_same_text(default_model_path, resident_text):
    result = run(default_model_path, *RUN, "--max-memory", "160MB", "--prefetch", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text


def test_a_larger_budget_keeps_more_resident(default_model_path, resident_text):
    result = run(default_model_path, *RUN, "--max-memory", "250MB", "--explain")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    layers = [line for line in result.stderr.splitlines() if line.startswith("layer")]
    assert len(layers) == 18 and all(line.endswith("resident") for line in layers), layers
    assert result.peak_rss < 250 * MB


def test_a_budget_below_what_the_process_needs_is_refused(default_model_path):
    line = run(default_model_path, *RUN, "--max-memory", "60MB").error_line()
    assert "--max-memory 60 MB is below what this process needed to start" in line
    # Starts, but a 5000-token run's KV cache (180 MB) alone is over the budget.
    line = run(default_model_path, "-p", PROMPT, "-n", "5000", "--max-memory", "200MB").error_line()
    assert "--max-memory 200 MB is below what this run needs with every weight streamed" in line
    assert "the KV cache for 5023 positions 185 MB" in line  # 23 prompt tokens; 36,864 bytes a position


# -- network ------------------------------------------------------------------------------------------------------


def test_default_model_streams_over_http_under_160_mb(tmp_path, servers, default_model_path, resident_text):
    srv = servers.netboot_serve(default_model_path.parent)
    url = srv.url(default_model_path.name)
    result = run(url, *RUN, "--max-memory", "160MB", "--explain", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    assert result.peak_rss < 160 * MB, result.peak_rss
    assert f"streamed from network ({url})" in result.stderr
    assert not (tmp_path / "cache").exists()  # streamed: nothing downloaded
    log = [json.loads(line) for line in srv.output if line.startswith("{")]
    gets = [r for r in log if r["path"] == "/" + default_model_path.name]
    assert gets and all(r["status"] == 206 and r["range"] for r in gets)
    size = default_model_path.stat().st_size
    assert sum(r["bytes"] for r in gets) > 2 * size  # every token streams the weights again
    # keep-alive: one connection each for the header and lookups, the layers' stream, the table's stream
    assert len({r["port"] for r in gets}) <= 3, "ranges must reuse keep-alive connections"
    # A few requests a forward pass (a stream of the layers, one of the table, the embedding rows), not one per
    # layer and chunk (9 passes x (17 layers + 45-89 chunks) would be over 500).
    assert len(gets) < 100, len(gets)


def test_streams_from_nginx_without_a_catalog(tmp_path, servers, default_model_path, resident_text):
    nginx = servers.nginx(default_model_path.parent)
    result = run(nginx.url(default_model_path.name), *RUN, "--max-memory", "160MB")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    assert result.peak_rss < 160 * MB, result.peak_rss
    ranged = [line for line in nginx.log_path.read_text().splitlines() if " 206 " in line]
    assert len(ranged) > 18  # every layer, the table's chunks, the header: all ranged


def test_a_server_that_ignores_range_is_refused(tmp_path, servers, default_model_path):
    srv = servers.http_server(default_model_path.parent)
    line = run(srv.url(default_model_path.name), *RUN, "--max-memory", "160MB").error_line()
    assert "ignores Range requests" in line


def test_corrupted_bytes_are_refetched_then_reported(tmp_path, servers, default_model_path, resident_text):
    once = servers.fault("lie", default_model_path, "--catalog", "--catalog-layers", "--count", "1")
    result = run(once.url(default_model_path.name), *RUN, "--max-memory", "160MB")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    assert "does not match its xxh3_128; reading it again" in result.stderr

    always = servers.fault("lie", default_model_path, "--catalog", "--catalog-layers")
    line = run(always.url(default_model_path.name), *RUN, "--max-memory", "160MB").error_line()
    assert "does not match the xxh3_128 the server published, read twice" in line


def test_dropped_connections_resume_from_the_missing_bytes(tmp_path, servers, default_model_path, resident_text):
    srv = servers.fault("flaky", default_model_path, "--count", "6", "--after", "300000")
    result = run(srv.url(default_model_path.name), *RUN, "--max-memory", "160MB", "--retries", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    log = [e for e in srv.log() if e["path"] == "/" + default_model_path.name]
    starts = [e for e in log if e["event"] == "response"]
    ends = [e for e in log if e["event"] == "done"]
    # Cut by the server (not left unread by the client when a stream is no longer needed): the first 6 answers.
    cut = [(int(d["range"][6:].split("-")[0]), d["sent"]) for d in ends[:6] if d["sent"] < d["length"]]
    assert len(cut) >= 4, cut  # of the first 6 responses, those longer than 300000 bytes
    asked = {int(s["range"][6:].split("-")[0]) for s in starts}
    for first, sent in cut:
        assert first + sent in asked, (first, sent)  # asked again from the first missing byte


def test_a_server_that_stays_down_ends_the_run_or_falls_back(tmp_path, servers, default_model_path, resident_text):
    srv = servers.fault("ok", default_model_path)
    url = srv.url(default_model_path.name)
    args = (*RUN[:3], "60", "--temperature", "0", "--max-memory", "200MB", "--retries", "1", "--timeout", "3")
    proc = subprocess.Popen([sys.executable, "-m", "netboot", "run", url, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    first = proc.stdout.read(20)  # generating: the model is booted and streaming
    srv.kill()
    out, err = proc.communicate(timeout=120)
    assert first and proc.returncode == 1, (first, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("netboot: error: ")
    assert "gave up after 2 tries" in err

    dead = f"http://127.0.0.1:{free_port()}/{default_model_path.name}"
    result = run(dead, *RUN, "--max-memory", "160MB", "--retries", "0", "--fallback", default_model_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == resident_text
    assert "trying" in result.stderr


# -- a model far larger than the budget ---------------------------------------------------------------------------


BIG_LLAMA = """
import json, sys
import numpy as np
import netboot
from netboot import memory
budget = None if sys.argv[2] == "resident" else int(sys.argv[2])
loaded = netboot.load(sys.argv[1], max_memory=budget, positions=16, prefetch=int(sys.argv[3]))
model = loaded.model

def run():
    cache = model.new_cache()
    ids = [1, 5, 9, 13]
    logits = model.forward(ids, cache, 0)
    out = []
    for pos in range(len(ids), len(ids) + 3):
        out.append(int(np.argmax(logits)))
        logits = model.forward([out[-1]], cache, pos)
    return out, logits[:64].tolist()

report = dict(zip(("ids", "logits"), run()))
if budget is None:  # the one-token steps again through the prompt path, as a streamed model takes them
    from netboot.backends.cpu import kernels

    model.backend.fused_decode = False
    kernels.use_batched(False)  # as `netboot run --max-memory` loads: one sequence, no batch kernels
    report["prompt_path"] = dict(zip(("ids", "logits"), run()))
print(json.dumps({**report, "peak": memory.peak_rss()}))
"""


@pytest.fixture(scope="module")
def big_llama(tmp_path_factory) -> Iterator[Path]:
    """A 2.1 GB Llama (TinyLlama's shapes, 40 layers, Q8_0 random blocks), written once per run."""
    from support.synthetic import SynthConfig, random_tensors, write_gguf_tensors

    config = SynthConfig(dim=2048, hidden=5632, n_layers=40, n_heads=16, n_kv_heads=4, vocab=32000, seq_len=256)
    tensors = random_tensors(config, GGMLType.Q8_0, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("big") / "big-llama.gguf"
    write_gguf_tensors(path, config, tensors)
    del tensors
    assert path.stat().st_size > 2 * 10**9
    yield path
    path.unlink(missing_ok=True)  # 2.1 GB: not left in pytest's temporary directory


def big_run(path: Path, budget: str, prefetch: int = 1) -> dict:
    script = path.parent / "big_llama.py"
    script.write_text(BIG_LLAMA)
    result = measured(script, path, budget, prefetch, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["child_peak"] = result.peak_rss
    return report


@pytest.mark.slow
def test_a_2_gb_model_runs_under_512_mb(big_llama):
    resident = big_run(big_llama, "resident")
    streamed = big_run(big_llama, str(512 * MB))
    assert streamed["ids"] == resident["ids"] == resident["prompt_path"]["ids"]
    # A streamed model takes one-token steps through the prompt path (CpuBackend.fused_decode): same bytes, same
    # kernels, so bit for bit the resident model's logits that way, and within float32 rounding of its one-call steps.
    assert streamed["logits"] == resident["prompt_path"]["logits"]
    logits = np.array(resident["logits"])
    np.testing.assert_allclose(resident["prompt_path"]["logits"], logits, rtol=0, atol=1e-4 * np.abs(logits).max())
    assert streamed["child_peak"] < 512 * MB, streamed["child_peak"]
    assert resident["child_peak"] > 4 * 512 * MB  # the resident run really holds the model
