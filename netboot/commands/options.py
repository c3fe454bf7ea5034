"""The options shared by `netboot run`, `info` and `pull`: network, memory, and sizes as people write them
(argparse only: building the parser must stay cheap, so nothing here imports the HTTP client)."""

from __future__ import annotations

import argparse
from typing import Any

from netboot.commands import Limit, check_limits, flag_size
from netboot.errors import NetbootError

MAX_TOKENS = 1 << 20  # beyond any context length netboot runs
SEED_MAX = 2**32 - 1  # llama.cpp's seeds are 32-bit too


def add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    """--threads, --max-memory, --prefetch and --explain: how the weights are held, for `run`, `chat` and `api`."""
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the matrix products (default: the cores this process may use)")
    parser.add_argument("--max-memory", default=None, metavar="SIZE",
                        help="keep peak RSS under SIZE (e.g. 512MB, 2GB), KV cache included: weights that do not "
                             "fit are streamed from the file layer by layer")
    parser.add_argument("--prefetch", type=int, default=1, metavar="N",
                        help="with --max-memory: layers read ahead while one computes (0 = off; default 1)")
    parser.add_argument("--explain", action="store_true",
                        help="print where each layer's weights come from and the memory accounting, to stderr")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run the layers as stages on a Ray cluster: its head's HOST:PORT, or 'auto' "
                             "(RAY_ADDRESS); needs pip install 'llm-netboot[cluster]'")
    parser.add_argument("--stages", default=None, metavar="N|RANGES",
                        help="with --cluster: split the layers into N stages (default: one per live node), or pin "
                             "them: 0-8@NODE,9-17@NODE (NODE: a node id's first characters or its address)")
    parser.add_argument("--stage-timeout", type=float, default=None, metavar="SECONDS",
                        help="with --cluster: a stage that does not answer a liveness check within SECONDS while "
                             "a step runs is taken as hung and replaced (default 3)")


def check_memory_arguments(args: argparse.Namespace) -> None:
    check_limits(args, {"prefetch": Limit("--prefetch", 0), "stage_timeout": Limit("--stage-timeout", 0.1, 3600)})
    if args.stages is not None:
        from netboot.cluster.pins import parse_stages

        parse_stages(args.stages)
    if args.max_memory is not None:
        flag_size("--max-memory", args.max_memory, positive=True)
    for flag in ("stages", "stage_timeout"):
        if getattr(args, flag) is not None and args.cluster is None:
            raise NetbootError(f"--{flag.replace('_', '-')} needs --cluster")
    if args.cluster is not None and args.max_memory is not None:
        raise NetbootError("--max-memory with --cluster: give each node its own budget instead (ray start ... "
                           "--labels netboot-max-memory=SIZE); its stage streams what does not fit")


def cluster_options(args: argparse.Namespace) -> dict:
    """load()'s keywords for --cluster, --stages and --stage-timeout (none without --cluster)."""
    if args.cluster is None:
        return {}
    return {"cluster": args.cluster, "stages": args.stages, "stage_timeout": args.stage_timeout}


def prepare_streaming(args: argparse.Namespace) -> None:
    """Under --max-memory, before anything imports numba: idle OpenMP workers sleep, and the process starts lean.
    With --cluster they sleep too: this process waits on the stages between its own kernels."""
    import os

    if getattr(args, "cluster", None) is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.max_memory is None:
        return
    from netboot.memory import lean_start

    # Streaming is bound by reads: numba's idle OpenMP workers spinning between kernels take the cores that
    # reading and hashing need (network streaming measured 20% faster with them sleeping; resident decoding
    # 10% slower, so only here). Read when OpenMP starts, so before numba runs anything.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    lean_start()


def add_sampling_arguments(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    """llama.cpp's sampling flags with its defaults, and -n/--max-tokens (default `max_tokens`)."""
    parser.add_argument("-n", "--max-tokens", type=int, default=max_tokens,
                        help=f"most new tokens to generate (default {max_tokens})")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=40, help="0 = off (default 40)")
    parser.add_argument("--top-p", type=float, default=0.95, help="1 = off (default 0.95)")
    parser.add_argument("--min-p", type=float, default=0.05, help="0 = off (default 0.05)")
    parser.add_argument("--repeat-penalty", type=float, default=1.0, help="1 = off (default 1.0)")
    parser.add_argument("--repeat-last-n", type=int, default=64,
                        help="tokens the penalty looks back over (default 64)")
    parser.add_argument("--seed", type=int, default=None)


def sampling_limits(min_tokens: int) -> dict[str, Limit]:
    """The limits of add_sampling_arguments' flags; -n at least `min_tokens`."""
    return {
        "max_tokens": Limit("-n/--max-tokens", min_tokens, MAX_TOKENS),
        "temperature": Limit("--temperature", 0),
        "top_k": Limit("--top-k", 0),
        "top_p": Limit("--top-p", 0, 1, above=True),
        "min_p": Limit("--min-p", 0, 1),
        "repeat_penalty": Limit("--repeat-penalty", 0, above=True),
        "repeat_last_n": Limit("--repeat-last-n", 0, MAX_TOKENS),
        "seed": Limit("--seed", 0, SEED_MAX),
    }


def add_network_arguments(parser: argparse.ArgumentParser, *, memory: bool = True) -> None:
    group = parser.add_argument_group("network boot (when the model is an http:// or https:// URL)")
    group.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="cache root (default: $NETBOOT_CACHE or ~/.cache/netboot)")
    group.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the model file")
    group.add_argument("--connections", type=int, default=4, metavar="N",
                       help="parallel ranged connections per file (default 4)")
    group.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="give up connecting, or on a stalled read, after this long; a transfer that makes no "
                            "progress for 3 times this long is given up, retries left or not (default 10)")
    group.add_argument("--min-rate", type=float, default=1000.0, metavar="BYTES_PER_S",
                       help="a transfer slower than this over --timeout seconds is stalled: retried, resumed, then "
                            "reported (default 1000; 0: no minimum)")
    group.add_argument("--retries", type=int, default=3, metavar="N",
                       help="retries of a failed transfer, with exponential backoff, resuming (default 3)")
    group.add_argument("--token", default=None, metavar="TOKEN",
                       help="send 'Authorization: Bearer TOKEN' to the server (netboot serve --token); "
                            "default: $NETBOOT_TOKEN, else none")
    group.add_argument("--fallback", action="append", default=[], metavar="PATH_OR_URL",
                       help="used when the source fails (repeatable; tried in order)")
    shown = group.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="show download progress even when stderr is not a terminal")
    shown.add_argument("--quiet", action="store_true", help="no download progress")
    if memory:
        group.add_argument("--no-disk", action="store_true",
                           help="boot into memory: the model is never written to disk (no model cache; "
                                "compiled kernels are still cached in ~/.cache/netboot/kernels)")


def network_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for `netboot.load` / `FetchOptions` from parsed arguments."""
    return {
        "cache_dir": args.cache_dir, "sha256": args.sha256, "connections": args.connections,
        "timeout": args.timeout, "min_rate": args.min_rate, "retries": args.retries, "fallbacks": tuple(args.fallback),
        "progress": "off" if args.quiet else ("on" if args.progress else "auto"),
        "no_disk": getattr(args, "no_disk", False), "token": args.token,
    }
