"""A byte source that moves on to the next copy of the same file (a path or a URL) when the current one stops
answering."""

from __future__ import annotations

import numpy as np

from netboot.errors import RemoteError, note, shown
from netboot.sources.http import HttpSource
from netboot.sources.net import Settings


class FallbackSource:
    """A source that moves to the next of `fallbacks` (paths or URLs of the same file) when the current one cannot
    deliver; a source that delivers wrong bytes is not left (the caller's hash check says so)."""

    def __init__(self, refs: list[str], settings: Settings):
        """Opens the first of `refs` that answers (a path or a URL)."""
        self._fallbacks = list(refs)
        self._settings = settings
        self._done = 0  # bytes read from sources left behind
        self.size = -1
        first_error = None
        while self._fallbacks:
            ref = self._fallbacks[0]
            try:
                self.current = self._open_next()
                self.size = self.current.size
                break
            except (RemoteError, OSError) as e:
                first_error = first_error or e
                if self._fallbacks:
                    note(f"{shown(ref)}: {getattr(e, 'reason', e)}; trying {shown(self._fallbacks[0])}")
        else:
            raise first_error

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def kind(self) -> str:
        return self.current.kind

    @property
    def bytes_read(self) -> int:
        return self._done + self.current.bytes_read

    def read(self, offset: int, length: int, buf: np.ndarray) -> np.ndarray:
        while True:
            try:
                return self.current.read(offset, length, buf)
            except RemoteError as e:
                if not e.unreachable or not self._fallbacks:
                    raise
                failed = self.current.name
                self._done += self.current.bytes_read
                self.current = self._open_next()
                note(f"{shown(failed)} stopped answering ({e.reason}); streaming from {shown(self.current.name)}")

    def stream(self, offset: int, length: int, slot: str = "stream"):
        return self.current.stream(offset, length, slot)

    def _open_next(self):
        from netboot.sources.file import FileSource
        from netboot.sources.urls import is_url

        ref = self._fallbacks.pop(0)
        source = HttpSource(ref, self._settings) if is_url(ref) else FileSource(ref)
        if self.size >= 0 and source.size != self.size:
            raise RemoteError(ref, f"fallback is {source.size} bytes, the model streamed so far {self.size}: not "
                                   "the same file")
        return source

    def close(self) -> None:
        self.current.close()
