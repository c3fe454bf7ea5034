"""The `netboot` subcommands: one module each, with `add_parser(subparsers)` and `main(args) -> exit status`."""

from __future__ import annotations

import sys


def fail(message: str) -> int:
    """Report a problem the user can act on as one line on stderr; the exit status is 1."""
    print(f"netboot: error: {message}", file=sys.stderr)
    return 1
