"""Hostile flag values: every number and size a command takes is checked right after parsing, before any model
loads, and a bad one is one line naming its flag (exit status 1) instead of a traceback, a crash or silence."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netboot.cli import main
from netboot.engine.sampling import SamplingParams
from netboot.errors import NetbootError

MODEL = "no-such-model.gguf"  # never opened: the flags are refused first

BAD_RUN = [
    ("-n", "-1"), ("--max-tokens", "99999999999"),
    ("--temperature", "nan"), ("--temperature", "inf"), ("--temperature", "-0.5"),
    ("--top-k", "-5"),
    ("--top-p", "nan"), ("--top-p", "1.5"), ("--top-p", "0"),
    ("--min-p", "-0.1"), ("--min-p", "1.01"), ("--min-p", "inf"),
    ("--repeat-penalty", "0"), ("--repeat-penalty", "-1"), ("--repeat-penalty", "nan"), ("--repeat-penalty", "inf"),
    ("--repeat-last-n", "-1"), ("--repeat-last-n", str(2**70)),
    ("--seed", "-1"), ("--seed", str(2**32)),
    ("--max-memory", "inf"), ("--max-memory", "nan"), ("--max-memory", "0"), ("--max-memory", "-5"),
    ("--max-memory", "1e400"),
    ("--prefetch", "-1"),
]


def assert_flag_error(code: int, stderr: str, flag: str) -> None:
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("netboot: error: ") and flag in lines[0], lines[0]


@pytest.mark.parametrize(("flag", "value"), BAD_RUN, ids=[f"{f}={v}" for f, v in BAD_RUN])
def test_run_refuses_bad_values(flag, value, capsys):
    code = main(["run", MODEL, "-p", "hi", flag, value])
    captured = capsys.readouterr()
    assert_flag_error(code, captured.err, flag)
    assert captured.out == ""


@pytest.mark.parametrize("value", ["65536", "32768", "0", "-3"])
def test_threads_out_of_range_is_one_line_not_a_crash(value):
    # A subprocess: the count reaches OpenMP, which crashes (65536) or prints its own error (32768) when let through.
    result = subprocess.run([sys.executable, "-m", "netboot", "run", MODEL, "-p", "hi", "--threads", value],
                            capture_output=True, text=True, timeout=120, check=False)
    assert_flag_error(result.returncode, result.stderr, "--threads")
    assert f"this machine has {os.cpu_count()}" in result.stderr


BAD_DEMO = [("--port", "-1"), ("--port", "65536"), ("-n", "-2"), ("--temperature", "nan")]


@pytest.mark.parametrize(("flag", "value"), BAD_DEMO, ids=[f"{f}={v}" for f, v in BAD_DEMO])
def test_demo_refuses_bad_values(flag, value, capsys):
    code = main(["demo", flag, value])
    assert_flag_error(code, capsys.readouterr().err, flag)


BAD_PRUNE = [("--older-than", "nan"), ("--older-than", "-1"), ("--older-than", "inf"), ("--max-size", "inf"),
             ("--max-size", "nan"), ("--max-size", "lots")]


@pytest.mark.parametrize(("flag", "value"), BAD_PRUNE, ids=[f"{f}={v}" for f, v in BAD_PRUNE])
def test_cache_prune_refuses_bad_values(flag, value, capsys, tmp_path):
    code = main(["cache", "--cache-dir", str(tmp_path), "prune", flag, value])
    assert_flag_error(code, capsys.readouterr().err, flag)
    assert list(tmp_path.iterdir()) == []  # refused before the cache was touched


def test_edge_values_are_accepted(capsys):
    # Every bound itself is allowed: the run gets as far as looking for the model.
    code = main(["run", MODEL, "-p", "hi", "-n", "0", "--temperature", "0", "--top-k", "0", "--top-p", "1",
                 "--min-p", "0", "--repeat-last-n", "0", "--seed", str(2**32 - 1), "--threads", "1",
                 "--prefetch", "0", "--max-memory", "1"])
    assert code == 1
    assert "model not found" in capsys.readouterr().err


def test_non_numbers_are_argparse_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", MODEL, "-p", "hi", "--temperature", "warm"])
    assert exit_.value.code == 2
    assert "argument --temperature: invalid float value: 'warm'" in capsys.readouterr().err


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", -1.0), ("top_k", -5),
    ("top_p", 0.0), ("top_p", float("nan")), ("min_p", 2.0), ("repeat_penalty", 0.0), ("repeat_last_n", -1),
    ("repeat_last_n", 2**70), ("seed", -1), ("seed", 2**32),
])
def test_sampling_params_name_the_bad_field(field, value):
    with pytest.raises(NetbootError, match=f"SamplingParams.{field} "):
        SamplingParams(**{field: value})


BAD_NETWORK = [
    ("--timeout", "inf"), ("--timeout", "1e300"), ("--timeout", "nan"), ("--timeout", "-1"), ("--timeout", "0"),
    ("--min-rate", "inf"), ("--min-rate", "nan"), ("--min-rate", "-3"),
    ("--retries", "-1"), ("--retries", "1000000"),
    ("--connections", "0"), ("--connections", "65"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_NETWORK, ids=[f"{f}={v}" for f, v in BAD_NETWORK])
@pytest.mark.parametrize("command", ["pull", "run"])
def test_network_flags_are_checked_before_any_connection(command, flag, value, capsys):
    """Port 9 on loopback (discard) is never reached: the settings are refused first (--timeout inf once ended in
    an OverflowError from the socket layer)."""
    argv = [command, "http://127.0.0.1:9/model.gguf", flag, value] + (["-p", "hi"] if command == "run" else [])
    code = main(argv)
    assert_flag_error(code, capsys.readouterr().err, flag)


BAD_CLUSTER = [
    (["--stages", "2"], "--stages needs --cluster"),
    (["--cluster", "127.0.0.2:1", "--stages", "0"], "--stages must be at least 1"),
    (["--cluster", "127.0.0.2:1", "--stages", "3-1"], "--stages '3-1': 3-1 ends before it starts"),
    (["--cluster", "127.0.0.2:1", "--stages", "0-8@"], "--stages '0-8@': expected N or ranges"),
    (["--cluster", "127.0.0.2:1", "--max-memory", "300MB"], "--labels netboot-max-memory=SIZE"),
    (["--stage-timeout", "3"], "--stage-timeout needs --cluster"),
    (["--cluster", "127.0.0.2:1", "--stage-timeout", "0"], "--stage-timeout must be in [0.1, 3600]"),
    (["--cluster", "127.0.0.2:1", "--stage-timeout", "nan"], "--stage-timeout must be a finite number"),
]


@pytest.mark.parametrize(("flags", "said"), BAD_CLUSTER, ids=[" ".join(f) for f, _ in BAD_CLUSTER])
def test_cluster_flags_are_checked_before_anything_connects(flags, said, capsys):
    code = main(["run", MODEL, "-p", "hi", *flags])
    captured = capsys.readouterr()
    assert_flag_error(code, captured.err, said)
