"""The one exception type the interfaces turn into a one-line message and a non-zero exit, and `note`, the
one-line remarks on stderr about something netboot did on its own (a fallback taken, a bad read done again)."""

import sys


def note(message: str) -> None:
    print(f"netboot: {message}", file=sys.stderr, flush=True)


class NetbootError(Exception):
    """A problem the user can act on: bad input, a missing file, an unsupported model."""


class FormatError(NetbootError):
    """A model file that is truncated, corrupt or not of the format it claims."""


class UnsupportedError(NetbootError):
    """A model that is well-formed but uses something netboot does not run (architecture, tensor type)."""
