"""`netboot demo`: the mission in one command. Serve the default model on loopback, boot it over HTTP (with the
progress bar and sha256 verification, into a fresh cache so the transfer is shown every time) and generate text."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time

from netboot.commands import Limit, check_limits
from netboot.commands.options import MAX_TOKENS
from netboot.errors import NetbootError

DEFAULT_PROMPT = "The capital of France is"
BANNER = re.compile(r"serving .* on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT = 60.0
LIMITS = {
    "max_tokens": Limit("-n/--max-tokens", 0, MAX_TOKENS),
    "temperature": Limit("--temperature", 0),
    "port": Limit("--port", 0, 65535),
}


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="serve the default model on loopback, boot it over HTTP and generate")
    demo.add_argument("-p", "--prompt", default=DEFAULT_PROMPT)
    demo.add_argument("-n", "--max-tokens", type=int, default=48)
    demo.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    demo.add_argument("--port", type=int, default=0, help="server port (default: any free port)")
    demo.set_defaults(handler=main, check=check)


def check(args: argparse.Namespace) -> None:
    check_limits(args, LIMITS)


def main(args: argparse.Namespace) -> int:
    check(args)
    from netboot.commands import build_parser, run
    from netboot.default_model import default_model_path

    model = default_model_path()
    server = _start_server(model.parent, args.port)
    try:
        url = f"{server.origin}/{model.name}"
        print(f"netboot demo: booting {url} over HTTP", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="netboot-demo-") as cache:
            run_args = build_parser().parse_args(
                ["run", url, "-p", args.prompt, "-n", str(args.max_tokens), "--temperature", str(args.temperature),
                 "--cache-dir", cache, "--progress", "--stats"])
            print(f"netboot demo: prompt: {args.prompt!r}", file=sys.stderr)
            return run.main(run_args)
    finally:
        server.stop()


class _Server:
    """`netboot serve DIR` in a child process on loopback; its banner is relayed to stderr."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.origin = ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start_server(directory, port: int) -> _Server:
    cmd = [sys.executable, "-m", "netboot", "serve", str(directory), "--host", "127.0.0.1", "--port", str(port)]
    server = _Server(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    found = threading.Event()

    def relay() -> None:
        for line in server.process.stderr:
            if line.startswith("{"):
                continue  # the access log (JSON lines) is drained, not shown
            sys.stderr.write(line)
            match = BANNER.search(line)
            if match and not found.is_set():
                server.origin = match.group(1)
                found.set()

    threading.Thread(target=relay, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not found.wait(0.1):
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise NetbootError("the demo's model server did not start (see the messages above)")
    return server
