"""`netboot api`: an OpenAI-compatible HTTP API (and the chat page at /) over the serving engine. It listens first
and loads the model in the background, so /health answers 503 until the model is ready."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from typing import Any

from netboot.commands import Limit, check_limits
from netboot.commands.engine_options import add_engine_arguments, check_engine_arguments
from netboot.errors import NetbootError

LIMITS = {"port": Limit("--port", 0, 65535), "max_queue": Limit("--max-queue", 0)}
DEFAULT_QUEUE = 256


def add_parser(sub) -> None:
    api = sub.add_parser("api", help="serve the model over an OpenAI-compatible HTTP API, with a chat page at /")
    add_engine_arguments(api)
    api.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    api.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    api.add_argument("--api-key", default=os.environ.get("NETBOOT_API_KEY"), metavar="KEY",
                     help="require 'Authorization: Bearer KEY' on the API (default: $NETBOOT_API_KEY, else none)")
    api.add_argument("--max-queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                     help=f"requests that may wait for a slot; more are answered 429 (default {DEFAULT_QUEUE})")
    api.set_defaults(handler=main, check=check)


def check(args: argparse.Namespace) -> None:
    check_engine_arguments(args)
    check_limits(args, LIMITS)
    if args.api_key is not None and not args.api_key:
        raise NetbootError("--api-key must not be empty")


def main(args: argparse.Namespace) -> int:
    check(args)
    asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from netboot.api.app import ApiServer
    from netboot.api.log import AccessLog

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = ApiServer(args.api_key, sys.stderr)
    AccessLog.stream = sys.stderr
    runner = web.AppRunner(server.application(), handler_cancellation=True, access_log_class=AccessLog)
    await runner.setup()
    served = None
    try:
        origin = await _listen(runner, args.host, args.port)
        _say(f"listening on {origin}; loading the model (/health answers 503 until it is ready)")
        served = await _load(args, stop)
        if served is None:
            return
        served.engine.max_queue = args.max_queue
        server.ready(served.engine, served.name, served.loaded.tokenizer, served.chat)
        if args.api_key:
            _say("the API needs 'Authorization: Bearer KEY' (the --api-key given); /health and /metrics are open")
        _say(f"serving {served.name} on {origin} (parallel {served.engine.parallel}, context "
             f"{served.engine.context})")
        await stop.wait()
    finally:
        if served is not None:
            await asyncio.to_thread(served.close)  # ends every running reply before the listener goes
        await runner.cleanup()
    _say("stopped")


async def _listen(runner: Any, host: str, port: int) -> str:
    from aiohttp import web

    site = web.TCPSite(runner, host, port, reuse_address=True, shutdown_timeout=2.0)
    try:
        await site.start()
    except OSError as e:
        raise NetbootError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = runner.addresses[0]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{bound[1]}"


async def _load(args: argparse.Namespace, stop: asyncio.Event) -> Any | None:
    """The model loaded and its engine started, on a thread of its own (the event loop answers meanwhile); None
    when told to stop first. A daemon thread: a stop during a download does not wait for it."""
    from netboot.commands.engine_options import start_engine

    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def deliver(setter: Any, value: Any) -> None:
        if not done.done():
            setter(value)

    def work() -> None:
        try:
            result: Any = start_engine(args)
            outcome = (done.set_result, result)
        except BaseException as e:  # noqa: BLE001 - handed to the loop, which raises it
            outcome = (done.set_exception, e)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop has closed: the server stopped while loading
            pass

    threading.Thread(target=work, name="netboot-load", daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([done, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if done.done():
        return done.result()
    return None


def _say(message: str) -> None:
    print(f"netboot api: {message}", file=sys.stderr, flush=True)
