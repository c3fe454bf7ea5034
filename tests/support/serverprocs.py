"""Server processes for the network tests, on 127.0.0.1: netboot's fault servers (tests/support/faultservers.py), nginx,
python -m http.server and `netboot serve`, started with the `servers` fixture and always stopped; and running
`python -m netboot` as a client process."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FAULT = Path(__file__).resolve().parent / "faultservers.py"
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def clean_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without proxies (the tests talk to 127.0.0.1 only). NETBOOT_CACHE stays, so the
    children share the session's compiled kernels and default model rather than filling ~/.cache; with `home`
    (a test of what a run writes under HOME) it goes, and HOME is `home`."""
    drop = {"NETBOOT_CACHE"} if home is not None else set()
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS and k not in drop}
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra)
    return env


def netboot(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netboot", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or clean_env(), check=False)


def netboot_bg(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "netboot", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or clean_env())


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netboot: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    """A server process on 127.0.0.1; the port comes from a line of its output matching `port_re`."""

    def __init__(self, cmd: list[str], port_re: str, log: Path | None = None, port: int | None = None,
                 kind: str = ""):
        self.kind, self.log_path = kind, log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=clean_env(), start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = port
        if port is None:
            deadline = time.monotonic() + 30
            while self.port is None:
                try:
                    line = self.lines.get(timeout=0.1)
                except queue.Empty:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{kind} server did not start: {''.join(self.output)}") from None
                    continue
                m = re.search(port_re, line)
                if m:
                    self.port = int(m.group(1))
        wait_for(self._listening, 30, f"{kind} to listen")

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} server exited: {''.join(self.output)}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}/{path}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> list[dict]:
        """The fault server's JSON log."""
        if not self.log_path or not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


class Servers:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.running: list[Server] = []
        self.n = 0

    def _add(self, server: Server) -> Server:
        self.running.append(server)
        return server

    def fault(self, mode: str, root: Path, *extra: str, port: int = 0) -> Server:
        self.n += 1
        log = self.tmp / f"fault{self.n}.log"
        cmd = [sys.executable, str(FAULT), mode, str(root), "--port", str(port), "--log", str(log), *extra]
        return self._add(Server(cmd, r"^(\d+)\s*$", log, kind=f"fault {mode}"))

    def http_server(self, directory: Path) -> Server:
        cmd = [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(directory)]
        return self._add(Server(cmd, r"port (\d+)", kind="http.server"))

    def nginx(self, root: Path, limit_rate: str | None = None) -> Server:
        exe = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                             if os.access(p, os.X_OK)), None)
        if exe is None:
            message = "nginx is not installed: the nginx interoperability test cannot run (apt-get install nginx-light)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip("!!! SKIPPED: " + message)
        self.n += 1
        prefix = self.tmp / f"nginx{self.n}"
        (prefix / "tmp").mkdir(parents=True)
        port = free_port()
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read pytest's 0700 temp dirs
        conf = prefix / "nginx.conf"
        conf.write_text(f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    log_format nb '$request_method $uri $status $body_bytes_sent "$http_range" "$http_if_none_match"';
    access_log {prefix}/access.log nb;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    default_type application/octet-stream;
    sendfile on;
    {f"limit_rate {limit_rate};" if limit_rate else ""}
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
        server = Server([exe, "-c", str(conf), "-p", str(prefix)], "", prefix / "access.log", port=port,
                        kind="nginx")
        return self._add(server)

    def netboot_serve(self, directory: Path, *extra: str) -> Server:
        if not (ROOT / "netboot" / "commands" / "serve.py").exists():
            pytest.skip("netboot serve is not there yet (netboot/commands/serve.py)")
        cmd = [sys.executable, "-m", "netboot", "serve", str(directory), "--port", "0", *extra]
        return self._add(Server(cmd, r"serving .* on http://127\.0\.0\.1:(\d+)", kind="netboot serve"))

    def stop(self) -> None:
        for s in self.running:
            s.kill()
