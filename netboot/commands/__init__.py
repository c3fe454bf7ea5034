"""The `netboot` subcommands: one module each, with `add_parser(subparsers)` and `main(args) -> exit status`;
`build_parser()` gathers them, `fail()` reports a problem as one line. `Limit` and `flag_size` check the numbers and
sizes given on the command line right after parsing, so a bad one is one line naming its flag (exit status 1); a
command's `check(args)`, set as a parser default, runs them before anything loads."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from dataclasses import dataclass

from netboot.errors import NetbootError


def fail(message: str) -> int:
    """Report a problem the user can act on as one line on stderr; the exit status is 1."""
    print(f"netboot: error: {message}", file=sys.stderr)
    return 1


@dataclass(frozen=True)
class Limit:
    """The values a numeric flag accepts: finite, at least `low` (more than `low` when `above`) and, unless `high`
    is None, at most `high`. `why` says where a bound comes from."""

    flag: str
    low: float
    high: float | None = None
    above: bool = False
    why: str = ""

    def check(self, value: float | None) -> None:
        """Raise NetbootError naming the flag unless `value` (None: not given) is acceptable."""
        if value is None:
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise NetbootError(f"{self.flag} must be a finite number (got {value})")
        if value < self.low or (self.above and value == self.low) or (self.high is not None and value > self.high):
            why = f": {self.why}" if self.why else ""
            raise NetbootError(f"{self.flag} must be {self.bounds()}{why} (got {_shown(value)})")

    def bounds(self) -> str:
        if self.high is None:
            return f"{'>' if self.above else '>='} {_number(self.low)}"
        return f"in {'(' if self.above else '['}{_number(self.low)}, {_number(self.high)}]"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _shown(value: float) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def check_limits(args: argparse.Namespace, limits: dict[str, Limit]) -> None:
    """Check each parsed argument (by its dest) that `limits` names."""
    for dest, limit in limits.items():
        limit.check(getattr(args, dest, None))


def flag_size(flag: str, text: str, *, positive: bool = False) -> int:
    """A size flag's value in bytes ("500M", "2G", ...): finite and not negative (positive when asked), else
    NetbootError naming the flag."""
    from netboot.sizes import parse_size

    try:
        size = parse_size(text)
    except NetbootError:
        raise NetbootError(f"{flag}: not a size: {text!r} (e.g. 500M, 2G, 300MiB)") from None
    if positive and size <= 0:
        raise NetbootError(f"{flag} must be a positive size (got {text!r})")
    return size


COMMANDS = ("demo", "run", "chat", "api", "info", "serve", "pull", "cache")


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
