"""One reply, streamed to the terminal as the engine generates it. Ctrl+C meanwhile cancels the request at the
engine's next step (a signal handler, so no KeyboardInterrupt lands in the middle of writing); the text shown so
far is the reply."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from netboot.engine.requests import Delta, Finished, Handle


@dataclass
class Reply:
    text: str
    finished: Finished
    interrupted: bool  # stopped by Ctrl+C

    @property
    def context_full(self) -> bool:
        return self.finished.reason == "length" and self.finished.detail == "context"


@contextmanager
def cancel_on_interrupt(handle: Handle) -> Iterator[threading.Event]:
    """While inside, SIGINT cancels `handle` (and sets the event yielded) instead of raising KeyboardInterrupt."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signals reach only the main thread
        return

    def on_interrupt(signum, frame) -> None:
        interrupted.set()
        handle.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def stream_reply(handle: Handle, out: TextIO) -> Reply:
    """Write the reply's text to `out` as it comes, flushing each piece, until the engine finishes it."""
    shown: list[str] = []
    with cancel_on_interrupt(handle) as interrupted:
        for event in handle:
            if isinstance(event, Delta) and event.text and not interrupted.is_set():
                out.write(event.text)
                out.flush()
                shown.append(event.text)
    assert handle.finished is not None
    return Reply("".join(shown), handle.finished, interrupted.is_set())
