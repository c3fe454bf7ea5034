"""Where a transfer's bytes go, and what it knows so far: the received byte intervals and the resume state, in a
partial file of the cache (with its state in a JSON file beside it) or in a memfd (RAM, nothing on disk)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from netboot.errors import NetbootError


class Intervals:
    """Disjoint, sorted [start, end) byte intervals."""

    def __init__(self, spans: list[list[int]] | None = None):
        self.spans: list[list[int]] = []
        for s, e in spans or []:
            self.add(int(s), int(e))

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged = []
        for s, e in self.spans:
            if e < start or s > end:
                merged.append([s, e])
            else:
                start, end = min(s, start), max(e, end)
        merged.append([start, end])
        merged.sort()
        self.spans = merged

    def total(self) -> int:
        return sum(e - s for s, e in self.spans)

    def prefix(self) -> int:
        """End of the contiguous run starting at byte 0."""
        return self.spans[0][1] if self.spans and self.spans[0][0] == 0 else 0

    def missing(self, size: int | None) -> list[tuple[int, int | None]]:
        """The gaps in [0, size); with an unknown size, everything after the prefix."""
        if size is None:
            return [(self.prefix(), None)]
        gaps, pos = [], 0
        for s, e in self.spans:
            if s > pos:
                gaps.append((pos, min(s, size)))
            pos = max(pos, e)
        if pos < size:
            gaps.append((pos, size))
        return [(s, e) for s, e in gaps if e > s]


@dataclass
class State:
    """What is known about a transfer in progress: enough to resume it in another process."""

    url: str
    total: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    done: Intervals = field(default_factory=Intervals)

    def validator(self) -> str | None:
        """The If-Range value: a strong ETag, else the Last-Modified date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def reset(self) -> None:
        self.total, self.etag, self.last_modified, self.done = None, None, None, Intervals()

    def to_json(self) -> dict:
        return {"url": self.url, "total": self.total, "etag": self.etag, "last_modified": self.last_modified,
                "done": self.done.spans}

    @classmethod
    def from_json(cls, data: dict) -> State:
        return cls(url=data["url"], total=data.get("total"), etag=data.get("etag"),
                   last_modified=data.get("last_modified"), done=Intervals(data.get("done") or []))


class Sink:
    """Where the bytes go: an open file descriptor that supports pwrite/pread."""

    fd: int
    state: State

    def ensure_size(self, size: int) -> None:
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)

    def truncate(self, size: int = 0) -> None:
        # Only when it changes something: on ext4, truncating a file to 0 makes its close() start writeback of
        # everything written since (auto_da_alloc), which costs a fast download a third of its time.
        if os.fstat(self.fd).st_size != size:
            os.ftruncate(self.fd, size)

    def save(self) -> None:
        """Persist the resume state (a no-op for memory)."""

    def discard(self) -> None:
        """Drop everything received (bad bytes)."""
        self.truncate(0)
        self.state.reset()


class FileSink(Sink):
    """A partial file with a JSON resume state beside it (`<part>.json`)."""

    def __init__(self, part: Path, url: str):
        self.path = Path(part)
        self.state_path = self.path.with_name(self.path.name + ".json")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.state = self._load(url)

    def _load(self, url: str) -> State:
        try:
            state = State.from_json(json.loads(self.state_path.read_text()))
            size = os.fstat(self.fd).st_size
            if state.url == url and (not state.done.spans or state.done.spans[-1][1] <= size):
                return state
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, 0)
        return State(url)

    def save(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state.to_json()))
        os.replace(tmp, self.state_path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        self.close()
        for p in (self.path, self.state_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


class MemorySink(Sink):
    """An anonymous RAM-backed file (memfd): nothing touches a disk; /proc/self/fd/N opens it like a file."""

    def __init__(self, name: str, url: str):
        if not hasattr(os, "memfd_create"):
            raise NetbootError("--no-disk needs memfd_create (Linux)")
        self.fd = os.memfd_create(f"netboot:{name}"[:249], 0)
        self.state = State(url)

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
