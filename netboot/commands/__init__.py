"""The `netboot` subcommands: one module each, with `add_parser(subparsers)` and `main(args) -> exit status`;
`build_parser()` gathers them, `fail()` reports a problem as one line."""

from __future__ import annotations

import argparse
import importlib
import sys


def fail(message: str) -> int:
    """Report a problem the user can act on as one line on stderr; the exit status is 1."""
    print(f"netboot: error: {message}", file=sys.stderr)
    return 1


COMMANDS = ("demo", "run", "info", "serve", "pull", "cache")


USAGE_EXAMPLES = """examples:
  netboot run -p "The capital of France is"          (the default model, Gemma 3 270M)
  netboot run model.gguf -p "Once upon a time" -n 64 --temperature 0
  netboot info model.gguf
  netboot run http://host:8080/model.gguf -p "Hello"   (boot over HTTP: fetched once into ~/.cache/netboot)
  netboot pull http://host:8080/model.gguf            (fetch into the cache, print the local path)
  netboot cache ls
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netboot", description="Run an LLM wherever its bytes are.",
                                     epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"netboot.commands.{name}").add_parser(sub)
    return parser
