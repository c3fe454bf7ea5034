"""Helpers the benchmark scripts share for running peer servers on loopback."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"serving .+ on (http://127\.0\.0\.1:\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until something accepts connections on 127.0.0.1:port; exits if the server process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"no server listening on 127.0.0.1:{port} after {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_netboot_serve(root: Path, prefix: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """`netboot serve ROOT` on a free port (behind `prefix`, e.g. taskset); returns the process and its origin."""
    proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "netboot", "serve", str(root), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # the access log goes on after the banner: keep reading so the server never blocks
        for line in proc.stderr:
            m = BANNER.search(line)
            if m and not ready.is_set():
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(120) or not found:
        raise SystemExit("netboot serve did not start")
    return proc, found[0]
