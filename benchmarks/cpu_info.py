"""The machine a benchmark ran on, in one line: CPU model, the cores this process may use, the SIMD features that
matter to the kernels (netboot's and llama.cpp's), and the commit of netboot measured."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16", "asimd", "neon")


def cpu_description() -> str:
    """'CPU model; N cores available; features: ...' from /proc/cpuinfo (x86 'flags', ARM 'Features')."""
    from netboot.cli import available_cores  # here: bench_engine's workers time netboot's import themselves

    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    have = [f for f in FEATURES if f in flags]
    return (f"CPU: {model or platform.processor() or platform.machine()}; {available_cores()} cores available; "
            f"features: {' '.join(have) or 'none of ' + ' '.join(FEATURES)}")


def netboot_commit() -> str:
    """git rev-parse --short HEAD of this checkout, '+ uncommitted changes' when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
