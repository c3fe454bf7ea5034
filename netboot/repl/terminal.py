'''What the user types, a message at a time. On a terminal: a `>>> ` prompt with line editing and history (the
arrow keys, through the stdlib's readline; the history kept in netboot's cache directory), and `"""` opens and
closes a message of several lines. From a pipe or a file: lines read plainly, no prompt, so `echo hi | netboot chat`
answers and ends at the end of its input.'''

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from netboot.paths import cache_dir

PROMPT = ">>> "
MORE = "... "
FENCE = '"""'
HISTORY_LINES = 1000


HISTORY_ENV = "NETBOOT_CHAT_HISTORY"


def history_path() -> Path | None:
    """$NETBOOT_CHAT_HISTORY (empty: keep none), else chat_history in netboot's cache directory."""
    given = os.environ.get(HISTORY_ENV)
    if given is not None:
        return Path(given).expanduser() if given else None
    return cache_dir() / "chat_history"


def read_message(read_line: Callable[[str], str | None]) -> tuple[str, bool] | None:
    '''One message from `read_line(prompt)` (None at the end of input): a line, or, from a line that starts with
    `"""`, the lines up to the one that ends with `"""`, joined by newlines; with whether it was such a block (whose
    text is never a command). None at the end of input (what an open block holds by then is still sent).'''
    line = read_line(PROMPT)
    if line is None or not line.lstrip().startswith(FENCE):
        return None if line is None else (line, False)
    first = line.lstrip()[len(FENCE):]
    if first.rstrip().endswith(FENCE):
        return first.rstrip()[: -len(FENCE)], True
    lines = [first] if first.strip() else []
    while True:
        line = read_line(MORE)
        if line is None:
            return ("\n".join(lines), True) if lines else None
        if line.rstrip().endswith(FENCE):
            lines.append(line.rstrip()[: -len(FENCE)])
            return "\n".join(lines).rstrip("\n"), True
        lines.append(line)


class Terminal:
    """Reads messages from `stdin`: interactively (prompt, editing, history) when it is a terminal."""

    def __init__(self, stdin: TextIO | None = None):
        self.stdin = stdin or sys.stdin
        self.interactive = self.stdin.isatty()
        self.history = history_path()
        self._readline = None
        if self.interactive:
            self._start_history()

    def read(self) -> tuple[str, bool] | None:
        """The next message and whether it was a \"\"\" block; None at the end of input (Ctrl+D). On a terminal,
        Ctrl+C raises KeyboardInterrupt."""
        return read_message(self._line)

    def _line(self, prompt: str) -> str | None:
        if self.interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = self.stdin.readline()
        return line.rstrip("\r\n") if line else None

    def _start_history(self) -> None:
        try:
            import readline
        except ImportError:  # a Python built without it: plain input() still works
            return
        self._readline = readline
        readline.set_history_length(HISTORY_LINES)
        if self.history is None:
            return
        try:
            readline.read_history_file(self.history)
        except OSError:  # none yet, or unreadable: start empty
            pass

    def close(self) -> None:
        """Keep the history for the next chat."""
        if self._readline is None or self.history is None:
            return
        try:
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history)
        except OSError:  # a read-only home: history is a comfort, not worth an error
            pass
