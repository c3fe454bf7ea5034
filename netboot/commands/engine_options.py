"""The flags of the commands that run the serving engine (`netboot api`, `netboot chat`): the model and how to load
it (as `netboot run`), the engine's size, the chat template and the default sampling settings; and `start_engine`,
which loads the model and starts the engine they describe."""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from netboot.commands import Limit, check_limits, flag_size
from netboot.commands.options import (
    add_memory_arguments,
    add_network_arguments,
    check_memory_arguments,
    cluster_options,
    network_options,
    prepare_streaming,
)

DEFAULT_CONTEXT = 4096  # positions per sequence unless --ctx-size says otherwise (or the model holds fewer)
MAX_PARALLEL = 256
MAX_POSITIONS = 1 << 24

LIMITS = {
    "parallel": Limit("--parallel", 1, MAX_PARALLEL),
    "ctx_size": Limit("--ctx-size", 2, MAX_POSITIONS),
}


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, help="model file (GGUF, llama2.c .bin, SafeTensors) or its "
                        "http(s):// URL; default: the packaged Gemma 3 270M")
    parser.add_argument("--tokenizer", default=None, help="tokenizer file or URL, when not beside or inside the model")
    parser.add_argument("--chat-template", default=None, metavar="NAME|FILE|TEMPLATE",
                        help="a built-in template (gemma, llama2, llama3, chatml), a Jinja template file, or the "
                             "template itself; default: the model's own, else the one its family uses")
    parser.add_argument("--parallel", type=int, default=4, metavar="N",
                        help="sequences decoded together in one batch (default 4); more wait their turn")
    parser.add_argument("--ctx-size", type=int, default=None, metavar="N",
                        help=f"positions each sequence may reach, prompt included (default: the model's context, at "
                             f"most {DEFAULT_CONTEXT})")
    parser.add_argument("--kv-memory", default=None, metavar="SIZE",
                        help="memory for the KV caches of running and remembered conversations (default: enough for "
                             "--parallel sequences of --ctx-size)")
    add_memory_arguments(parser)
    add_network_arguments(parser)


def check_engine_arguments(args: argparse.Namespace) -> None:
    check_limits(args, LIMITS)
    check_memory_arguments(args)
    if args.kv_memory is not None:
        flag_size("--kv-memory", args.kv_memory, positive=True)


@dataclass
class Served:
    """A loaded model with its engine and chat format, as the interfaces use them."""

    loaded: Any  # netboot.loader.LoadedModel
    engine: Any  # netboot.engine.scheduler.Engine
    chat: Any  # netboot.chat ChatFormat
    name: str  # the model's name as clients give it

    def close(self) -> None:
        self.engine.close()


def start_engine(args: argparse.Namespace) -> Served:
    """Load the model the flags name and start an engine on it (printing --explain's report to stderr), both on
    the engine's own thread (see `Engine.serve_forever`: the thread that loads is the one that computes fast).
    Returns once the engine runs; a load that fails raises its error here."""
    ready: Future[Served] = Future()

    def run() -> None:
        try:
            served = _load_engine(args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who reports it
            ready.set_exception(e)
            return
        ready.set_result(served)
        served.engine.serve_forever()

    threading.Thread(target=run, name="netboot-engine", daemon=True).start()
    return ready.result()


def _load_engine(args: argparse.Namespace) -> Served:
    prepare_streaming(args)
    from netboot.chat import chat_format
    from netboot.engine.scheduler import Engine
    from netboot.loader import load
    from netboot.model.kv_cache import KVCache

    memory: dict[str, Any] = {}
    if args.cluster is not None:  # what a stage under its node's budget plans for
        memory = {"positions": lambda file: _planned_positions(args, file.config)}
    if args.max_memory is not None:
        # The plan sets aside the KV caches' memory: --kv-memory, or --parallel sequences of the whole context.
        memory = {"max_memory": flag_size("--max-memory", args.max_memory), "prefetch": args.prefetch,
                  "positions": lambda file: _planned_positions(args, file.config), "batched": True}
    loaded = load(args.model, args.tokenizer, **memory, **network_options(args), **cluster_options(args))
    if args.explain:
        print(loaded.explain(), file=sys.stderr)
    config = loaded.model.config
    kv_budget = None
    if args.kv_memory is not None or args.max_memory is not None:
        kv_budget = _planned_positions(args, config) * KVCache.bytes_per_position(config)
    chat = chat_format(loaded.file, loaded.tokenizer, args.chat_template)
    engine = Engine(loaded.model, loaded.tokenizer, parallel=args.parallel, context=context_for(args, config),
                    kv_budget=kv_budget)
    return Served(loaded, engine, chat, model_name(args.model, loaded))


def context_for(args: argparse.Namespace, config) -> int:
    return min(args.ctx_size or DEFAULT_CONTEXT, config.context_length)


def _planned_positions(args: argparse.Namespace, config) -> int:
    """KV positions the engine may hold at once: what --kv-memory holds, else --parallel whole contexts."""
    from netboot.model.kv_cache import KVCache

    if args.kv_memory is not None:
        return max(1, flag_size("--kv-memory", args.kv_memory) // KVCache.bytes_per_position(config))
    return args.parallel * context_for(args, config)


def model_name(ref: str | None, loaded) -> str:
    """The name clients use for the model: its file name without the extension (the default model's too)."""
    from pathlib import PurePosixPath
    from urllib.parse import unquote, urlsplit

    from netboot.sources.urls import is_url

    # A streamed URL's ModelFile is a memfd (/proc/self/fd/N): its name comes from the URL.
    where = unquote(urlsplit(ref).path) if ref is not None and is_url(ref) else str(loaded.file.path)
    name = PurePosixPath(where).name
    for suffix in (".gguf", ".bin", ".safetensors"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
