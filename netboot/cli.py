"""The `netboot` command. stdout carries only generated text (or `info`'s report); everything else goes to stderr."""

from __future__ import annotations

import argparse
import os
import sys
import time

USAGE_EXAMPLES = """examples:
  netboot run -p "The capital of France is"          (the default model, Gemma 3 270M)
  netboot run model.gguf -p "Once upon a time" -n 64 --temperature 0
  netboot info model.gguf
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netboot", description="Run an LLM wherever its bytes are.",
                                     epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate text from a prompt")
    run.add_argument("model", nargs="?", default=None, help="model file (GGUF, llama2.c .bin, SafeTensors); "
                     "default: the packaged Gemma 3 270M")
    run.add_argument("-p", "--prompt", required=True)
    run.add_argument("-n", "--max-tokens", type=int, default=128, help="most new tokens to generate (default 128)")
    run.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    run.add_argument("--top-k", type=int, default=40, help="0 = off (default 40)")
    run.add_argument("--top-p", type=float, default=0.95, help="1 = off (default 0.95)")
    run.add_argument("--min-p", type=float, default=0.05, help="0 = off (default 0.05)")
    run.add_argument("--repeat-penalty", type=float, default=1.0, help="1 = off (default 1.0)")
    run.add_argument("--repeat-last-n", type=int, default=64, help="tokens the penalty looks back over (default 64)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--stop", action="append", default=[], help="stop when this text is generated (repeatable)")
    run.add_argument("--threads", type=int, default=None, help="threads for the matrix products (default: all cores)")
    run.add_argument("--tokenizer", default=None, help="tokenizer file, when not beside or inside the model")
    run.add_argument("--no-special", action="store_true", help="treat special-token text in the prompt as plain text")
    run.add_argument("--stats", action="store_true", help="print prefill/decode tok/s and peak RSS to stderr")

    info = sub.add_parser("info", help="describe a model file: architecture, tensors, layer byte ranges, tokenizer")
    info.add_argument("model", nargs="?", default=None)
    info.add_argument("--tokenizer", default=None)
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            return _fail("--threads must be at least 1")
        # Must be set before numpy loads its BLAS.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    from netboot.errors import NetbootError

    try:
        if args.command == "run":
            return _run(args)
        return _info(args)
    except NetbootError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (OSError, MemoryError) as e:
        return _fail(str(e))


def _fail(message: str) -> int:
    print(f"netboot: error: {message}", file=sys.stderr)
    return 1


def _validate_sampling(args) -> str | None:
    if args.max_tokens < 0:
        return "-n/--max-tokens must not be negative"
    if args.temperature < 0:
        return "--temperature must not be negative"
    if not 0.0 < args.top_p <= 1.0:
        return "--top-p must be in (0, 1]"
    if not 0.0 <= args.min_p <= 1.0:
        return "--min-p must be in [0, 1]"
    if args.repeat_penalty <= 0:
        return "--repeat-penalty must be positive"
    return None


def _run(args) -> int:
    problem = _validate_sampling(args)
    if problem:
        return _fail(problem)
    from netboot.generate import Generation
    from netboot.loader import load
    from netboot.sampling import SamplingParams

    start = time.perf_counter()
    loaded = load(args.model, args.tokenizer)
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
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load: {load_seconds:.2f} s | prefill: {stats.prompt_tokens} tokens, {stats.prefill_tps:.1f} tok/s | "
          f"decode: {stats.generated_tokens} tokens, {stats.decode_tps:.2f} tok/s | peak RSS: {peak_mb:.0f} MB | "
          f"stop: {stats.stop_reason}", file=sys.stderr)


def _info(args) -> int:
    from netboot.formats import open_model
    from netboot.info import describe, render
    from netboot.loader import resolve

    file = open_model(resolve(args.model), args.tokenizer)
    report = describe(file)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0
