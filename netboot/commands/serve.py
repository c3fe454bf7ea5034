"""`netboot serve DIR`: serve the models under DIR over HTTP (ranges, validators, a catalog with sha256) for
`netboot run URL` and for bare-metal clients."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from netboot.errors import NetbootError, note

QEMU_HOST = "10.0.2.2"  # the host as a QEMU guest on user networking (-netdev user) sees it


def add_parser(sub) -> None:
    serve = sub.add_parser("serve", help="serve the models under DIR over HTTP (read-only) for network boot")
    serve.add_argument("dir", metavar="DIR",
                       help="directory of models (GGUF, llama2.c .bin + tokenizer.bin, SafeTensors directories)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    serve.add_argument("--token", default=os.environ.get("NETBOOT_SERVE_TOKEN"), metavar="TOKEN",
                       help="require 'Authorization: Bearer TOKEN' on every request "
                            "(default: $NETBOOT_SERVE_TOKEN, else none)")
    serve.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="a client must send a complete request head within this long of connecting or of its "
                            "previous response; idle keep-alive connections close after it too (default 10)")
    serve.add_argument("--send-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="close a connection whose client takes no data for this long (default 60)")
    serve.add_argument("--max-connections", type=int, default=None, metavar="N",
                       help="connections open at once; more are answered 503 and closed (default: from the "
                            "descriptor limit, ulimit -n: half of what it leaves, at most 1024)")
    serve.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser()
    if not root.is_dir():
        raise NetbootError(f"not a directory: {root}")
    if not 0 <= args.port <= 65535:
        raise NetbootError(f"--port must be between 0 and 65535, not {args.port}")
    if not (args.request_timeout > 0 and args.send_timeout > 0):
        raise NetbootError("--request-timeout and --send-timeout must be positive")
    if args.max_connections is not None and args.max_connections < 1:
        raise NetbootError(f"--max-connections must be at least 1, not {args.max_connections}")
    if args.token is not None and not args.token:
        raise NetbootError("--token must not be empty")
    from netboot.fileserver.app import ModelServer

    server = ModelServer(root, token=args.token, request_timeout=args.request_timeout,
                         send_timeout=args.send_timeout, log=sys.stderr, max_connections=args.max_connections)
    asyncio.run(_serve(server, args.host, args.port))
    return 0


async def _serve(server, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound = await server.listen(host, port)
    except OSError as e:
        raise NetbootError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        note(f"indexing and hashing the models under {server.root} (hashes are kept for next time) ...")
        await server.refresh_catalog()
        banner(server, host, bound[0][1])
        await stop.wait()
        note("stopping")
    finally:
        await server.close()


def banner(server, host: str, port: int) -> None:
    """What is served and how to boot it; the last line says the server is ready. Only prints: nothing is sent
    anywhere."""
    everywhere = host in ("0.0.0.0", "::", "")
    shown = "127.0.0.1" if everywhere else (f"[{host}]" if ":" in host else host)
    origin = f"http://{shown}:{port}"
    qemu = f"http://{QEMU_HOST}:{port}"
    entries = server.catalog.render(origin)
    lines = [f"models under {server.root}:" if entries else
             f"no models under {server.root} (its files are still served)"]
    for e in entries:
        lines.append(f"  {e['name']}: {e['format']} {e['architecture']}, {e['n_layers']} layers, "
                     f"{e['size'] / 1e6:.1f} MB")
        lines.append(f"      netboot run {e['url']}")
        lines.append(f"      (from a QEMU guest on user networking: {qemu}{e['url'][len(origin):]})")
    for rel, why in sorted(server.catalog.problems.items()):
        lines.append(f"  not listed: {rel}: {why}")
    if everywhere:
        lines.append(f"listening on every interface ({host or '0.0.0.0'}): other machines use this one's address")
    if server.token is not None:
        lines.append("every request needs 'Authorization: Bearer TOKEN' (the --token given)")
    lines.append(f"serving {server.root} on {origin} (read-only; catalog: {origin}/models; Ctrl-C stops)")
    sys.stderr.write("".join(f"netboot: {line}\n" for line in lines))
    sys.stderr.flush()
