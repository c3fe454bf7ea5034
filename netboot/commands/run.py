"""`netboot run`: generate text from a prompt."""

from __future__ import annotations

import argparse
import sys
import time

from netboot.commands import check_limits, flag_size
from netboot.commands.options import (
    add_memory_arguments,
    add_network_arguments,
    add_sampling_arguments,
    check_memory_arguments,
    cluster_options,
    network_options,
    prepare_streaming,
    sampling_limits,
)


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="generate text from a prompt")
    run.add_argument("model", nargs="?", default=None, help="model file (GGUF, llama2.c .bin, SafeTensors) or its "
                     "http(s):// URL; default: the packaged Gemma 3 270M")
    run.add_argument("-p", "--prompt", required=True)
    add_sampling_arguments(run, max_tokens=128)
    run.add_argument("--stop", action="append", default=[], help="stop when this text is generated (repeatable)")
    run.add_argument("--tokenizer", default=None, help="tokenizer file or URL, when not beside or inside the model")
    run.add_argument("--no-special", action="store_true", help="treat special-token text in the prompt as plain text")
    run.add_argument("--stats", action="store_true", help="print prefill/decode tok/s and peak RSS to stderr")
    add_memory_arguments(run)
    add_network_arguments(run)
    run.set_defaults(handler=main, check=check)


LIMITS = sampling_limits(min_tokens=0)


def check(args: argparse.Namespace) -> None:
    """Every number and size on the command line, before anything loads (NetbootError naming the flag)."""
    check_limits(args, LIMITS)
    check_memory_arguments(args)


def main(args: argparse.Namespace) -> int:
    check(args)
    prepare_streaming(args)
    from netboot.engine.generate import Generation
    from netboot.engine.sampling import SamplingParams
    from netboot.loader import load

    def positions(file) -> int:  # the KV cache the run needs: its prompt and what it may generate
        return len(file.tokenizer.encode(args.prompt, parse_special=not args.no_special)) + args.max_tokens

    memory: dict = {"positions": positions} if args.cluster is not None else {}  # what a budgeted stage plans for
    if args.max_memory is not None:
        budget = flag_size("--max-memory", args.max_memory, positive=True)
        memory = {"max_memory": budget, "positions": positions, "prefetch": args.prefetch}
    start = time.perf_counter()
    loaded = load(args.model, args.tokenizer, **memory, **network_options(args), **cluster_options(args))
    if args.explain:
        print(loaded.explain(), file=sys.stderr)
    tokenizer = loaded.tokenizer
    load_seconds = time.perf_counter() - start
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n, seed=args.seed)
    ids = tokenizer.encode(args.prompt, parse_special=not args.no_special)
    gen = Generation(loaded.model, tokenizer, ids, max_tokens=args.max_tokens, params=params, stop=args.stop)
    for text in gen.stream():
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.stats:
        _print_stats(gen.stats, load_seconds)
    return 0


def _print_stats(stats, load_seconds: float) -> None:
    from netboot import memory

    peak_mb = memory.peak_rss() / 1e6  # MB as --max-memory counts them
    print(f"load: {load_seconds:.2f} s | prefill: {stats.prompt_tokens} tokens, {stats.prefill_tps:.1f} tok/s | "
          f"decode: {stats.generated_tokens} tokens, {stats.decode_tps:.2f} tok/s | peak RSS: {peak_mb:.0f} MB | "
          f"stop: {stats.stop_reason}", file=sys.stderr)
