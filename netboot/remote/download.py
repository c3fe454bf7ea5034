"""One file over HTTP into a file descriptor (a partial file in the cache, or a memfd), verified as it arrives.

A transfer is a series of rounds. A round opens with a probe, a GET asking for the first missing bytes
(`Range: bytes=S-` or a bounded range; `If-Range` when resuming, so a changed file is sent whole; `If-None-Match` /
`If-Modified-Since` when revalidating a cached copy). Then:

- 304: the cached copy is current (no body was sent).
- 206 with the matching Content-Range: the server does ranges. The probe's stream runs on; with --connections N > 1,
  if after a short warm-up it is slower than one connection can usefully carry, the rest of it is cut into chunks
  fetched over up to N connections, each answer checked (206, exactly the Content-Range asked for, the same total
  and ETag); any other answer drops the transfer to a single stream from byte 0.
- 200: no ranges (python -m http.server), or the file changed: one stream from byte 0.

Received bytes are written in place (pwrite) and recorded as done intervals; a hashing thread runs sha256 over the
contiguous prefix as it grows, so the digest is ready when the last byte lands. A failed round (connection refused,
reset or closed early, a stalled read, 5xx) is retried with exponential backoff, resuming from the done intervals; a
transfer in the cache keeps them in a small JSON state file beside the partial file, so a later process resumes too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from netboot.remote.http import (
    IntegrityError,
    RemoteError,
    Settings,
    as_remote_error,
    sleep_before_retry,
    status_error,
)
from netboot.remote.progress import Progress
from netboot.remote.urls import shown

MiB = 1 << 20
MIN_CHUNK = 4 * MiB  # the smallest piece one request of a parallel transfer asks for
MAX_CHUNK = 64 * MiB
SPLIT_AFTER = 0.3  # seconds of a single stream before deciding whether to add connections
ONE_STREAM_ENOUGH = 256e6  # bytes/s: a stream this fast is not split (see Transfer._workers)
HASH_CHUNK = 8 * MiB
SAVE_INTERVAL = 1.0  # seconds between writes of the resume state
PROGRESS_RESET = 4 * MiB  # a failed round that still received this much does not count against the retries
MAX_RESTARTS = 3  # a file that changes under us (or ranges that do not add up) restarts from 0 at most this often
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


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
            from netboot.errors import NetbootError

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


@dataclass
class Outcome:
    not_modified: bool = False
    sha256: str | None = None
    size: int = 0
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    received: int = 0  # body bytes received by this transfer (resumed bytes not counted)


class _Restart(Exception):
    """Start the round again at once (the file changed, or ranges cannot be trusted)."""


class _Aborted(Exception):
    pass


class Hasher:
    """sha256 of the contiguous prefix of a file being written, in a thread that follows the writers."""

    def __init__(self, fd: int):
        self.fd = fd
        self.sha = hashlib.sha256()
        self.pos = 0
        self._limit = 0
        self._gen = 0  # bumped by reset(): a chunk read for an older generation is not hashed
        self._stop = False
        self._lock = threading.Lock()  # held while a chunk is hashed
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="netboot-sha256", daemon=True)
        self._thread.start()

    def advance(self, end: int) -> None:
        with self._cond:
            if end > self._limit:
                self._limit = end
                self._cond.notify()

    def reset(self) -> None:
        with self._lock, self._cond:
            self.sha, self.pos, self._limit = hashlib.sha256(), 0, 0
            self._gen += 1

    def _step(self, limit: int, gen: int) -> bool:
        with self._lock:
            if gen != self._gen or self.pos >= limit:
                return False
            data = os.pread(self.fd, min(HASH_CHUNK, limit - self.pos), self.pos)
            if not data:
                return False
            self.sha.update(data)
            self.pos += len(data)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._limit <= self.pos:
                    self._cond.wait()
                if self._stop:
                    return
                limit, gen = self._limit, self._gen
            while not self._stop and self._step(limit, gen):
                pass

    def finish(self, size: int) -> str:
        self.stop()
        self._thread.join()
        while self._step(size, self._gen):
            pass
        if self.pos != size:
            raise OSError(f"could not read back byte {self.pos} of {size} to hash it")
        return self.sha.hexdigest()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    m = _CONTENT_RANGE.match(value or "")
    if not m or m.group(3) == "*":
        return None
    first, last, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return (first, last, total) if first <= last < total else None


def _looks_like_html(head: bytes) -> bool:
    text = head[:256].lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


class Transfer:
    """Fetch `url` into `sink`. `expect_size` / `expect_sha` (from a catalog or --sha256) are checked;
    `cached` (etag, last_modified, size) makes the probe conditional, for revalidating a cached copy."""

    def __init__(self, client: httpx.Client, url: str, sink: Sink, settings: Settings, progress: Progress,
                 expect_size: int | None = None, expect_sha: str | None = None,
                 cached: tuple[str | None, str | None, int] | None = None):
        self.client, self.url, self.sink, self.settings, self.progress = client, url, sink, settings, progress
        self.expect_size, self.expect_sha, self.cached = expect_size, expect_sha, cached
        self.state = sink.state
        self.final_url = url
        self.single_only = False
        self.received = 0
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._last_save = time.monotonic()
        self._hasher: Hasher | None = None

    # -- the retry loop ------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._hasher = Hasher(self.sink.fd)
        st = self.state
        if st.total and not st.done.missing(st.total) and not self.expect_sha:
            # A partial file that is whole (its process died before renaming it) but nothing pins its bytes: ask
            # for its last byte with If-Range, so that a changed file is fetched again rather than trusted.
            st.done = Intervals([[s, min(e, st.total - 1)] for s, e in st.done.spans])
        failures = restarts = 0
        try:
            while True:
                before = self.state.done.total()
                try:
                    outcome = self._round()
                    if outcome is not None:
                        return outcome
                    return self._finish()
                except _Restart:
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        raise RemoteError(self.url, "the file keeps changing during the download") from None
                except (RemoteError, httpx.HTTPError, OSError) as exc:
                    if isinstance(exc, OSError) and not isinstance(exc, httpx.HTTPError) and exc.errno is not None:
                        raise  # a local I/O problem (disk full, ...): not the server's fault
                    err = as_remote_error(exc, self.url, self.settings)
                    if not err.retriable:
                        raise err from None
                    if self.state.done.total() - before >= PROGRESS_RESET:
                        failures = 0  # real progress: the count bounds failures in a row
                    failures += 1
                    if failures > self.settings.retries:
                        err.unreachable = True
                        raise err from None
                    self.sink.save()
                    sleep_before_retry(self.settings, failures)
        finally:
            self._hasher.stop()
            self.sink.save()

    def _finish(self) -> Outcome:
        st = self.state
        size = st.total if st.total is not None else st.done.prefix()
        if st.done.missing(size):
            raise RemoteError(self.url, "the transfer ended with bytes missing", retriable=True)
        self.sink.truncate(size)
        digest = self._hasher.finish(size)
        if self.expect_size is not None and size != self.expect_size:
            raise IntegrityError(self.url, f"size mismatch: expected {self.expect_size} bytes, received {size}")
        if self.expect_sha and digest != self.expect_sha.lower():
            raise IntegrityError(self.url, f"sha256 mismatch: expected {self.expect_sha.lower()}, got {digest}")
        return Outcome(False, digest, size, st.etag, st.last_modified, self.final_url, self.received)

    # -- one round -----------------------------------------------------------------------------------------------

    def _chunk(self, remaining: int) -> int:
        n = max(1, self.settings.connections)
        return min(MAX_CHUNK, max(MIN_CHUNK, -(-remaining // (n * 4))))

    def _reset(self) -> None:
        self.sink.truncate(0)
        self.state.reset()
        self._hasher.reset()

    def _round(self) -> Outcome | None:
        st = self.state
        missing = st.done.missing(st.total)
        if not missing:
            return None
        if st.done.total() and not st.validator():
            self._reset()  # nothing to tell whether the file changed since: resuming could splice two versions
            missing = st.done.missing(st.total)
        start, end = missing[0]
        headers: dict[str, str] = {}
        if not self.single_only:
            to_end = end is None or end == st.total
            headers["Range"] = f"bytes={start}-" if to_end else f"bytes={start}-{end - 1}"
            if st.done.total() and st.validator():
                headers["If-Range"] = st.validator()
        conditional = self.cached is not None and not st.done.total()
        if conditional:
            etag, modified, _ = self.cached
            if etag:
                headers["If-None-Match"] = etag
            if modified:
                headers["If-Modified-Since"] = modified
        response = self._open(self.url, headers)
        try:
            return self._probe(response, start, end, conditional)
        finally:
            response.close()

    def _open(self, url: str, headers: dict[str, str]) -> httpx.Response:
        request = self.client.build_request("GET", url, headers=headers)
        return self.client.send(request, stream=True)

    def _probe(self, response: httpx.Response, start: int, end: int | None, conditional: bool) -> Outcome | None:
        st = self.state
        code = response.status_code
        etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
        if code == 304 and conditional:
            return Outcome(True, None, self.cached[2], etag or self.cached[0], modified or self.cached[1],
                           str(response.url))
        if code == 416 and not self.single_only:
            self.single_only = True
            self._reset()
            raise _Restart
        if code not in (200, 206):
            raise status_error(response, self.url)
        self.final_url = str(response.url)
        ctype = response.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() == "text/html":
            raise RemoteError(self.url, f"the server answered with an HTML page ({ctype}), not the file")
        self._check_encoding(response)
        if code == 200:
            length = response.headers.get("content-length")
            size = int(length) if length and length.isdigit() else None
            self._check_expected(size)
            if self._unchanged(etag, size):
                return Outcome(True, None, size, etag, modified, self.final_url)
            self._reset()
            st.total, st.etag, st.last_modified = size, etag, modified
            self.progress.start(size, 0)
            self._workers(response, _Piece(0, size), deque(), can_split=False)
            if st.total is None:
                st.total = st.done.prefix()
            return None
        parsed = parse_content_range(response.headers.get("content-range"))
        if (parsed is None or parsed[0] != start
                or parsed[1] != (parsed[2] if end is None or end == st.total else end) - 1):
            # A 206 that is not the range asked for: do not trust ranges from this server.
            self.single_only = True
            self._reset()
            raise _Restart
        first, last, total = parsed
        self._check_expected(total)
        if self._unchanged(etag, total):
            return Outcome(True, None, total, etag, modified, self.final_url)
        if st.total is not None and (total != st.total or (st.etag and etag and etag != st.etag)):
            self._reset()  # the file changed since the partial download (a server that ignores If-Range)
            raise _Restart
        st.total, st.etag, st.last_modified = total, etag or st.etag, modified or st.last_modified
        self.sink.ensure_size(total)
        self.progress.start(total, st.done.total())
        self._hasher.advance(st.done.prefix())
        rest = Intervals(st.done.spans)
        rest.add(first, last + 1)
        queue: deque[_Piece] = deque()
        for s, e in rest.missing(total):  # other gaps, left by an earlier parallel transfer
            chunk = self._chunk(e - s) if self.settings.connections > 1 else e - s
            queue.extend(_Piece(p, min(e, p + chunk)) for p in range(s, e, chunk))
        self._workers(response, _Piece(first, last + 1), queue, can_split=True)
        return None

    def _check_encoding(self, response: httpx.Response) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RemoteError(self.url, f"the server compressed the body (Content-Encoding: {encoding}) although "
                              "asked for the bytes as stored")

    def _check_expected(self, size: int | None) -> None:
        if self.expect_size is not None and size is not None and size != self.expect_size:
            raise IntegrityError(self.url, f"the server sends {size} bytes, the catalog says {self.expect_size}")

    def _unchanged(self, etag: str | None, size: int | None) -> bool:
        """A server that ignored If-None-Match but sends the cached copy's strong ETag and size: no need to fetch."""
        if self.cached is None or not etag or etag.startswith("W/") or self.state.done.total():
            return False
        return etag == self.cached[0] and size == self.cached[2]

    # -- the connections -----------------------------------------------------------------------------------------

    def _workers(self, response: httpx.Response, first: _Piece, queue: deque[_Piece], can_split: bool) -> None:
        """Stream `first` from the open `response`, and the queued pieces over new connections. With ranges and
        --connections > 1, the first stream is split over more connections when, after a warm-up, it runs
        slower than one connection can carry (below that, more connections fill the link; above it, a
        Python client is bound by its own parsing, and more connections only contend for the CPU)."""
        errors: list[BaseException] = []
        threads: list[threading.Thread] = []
        self._abort.clear()

        def work(opened: httpx.Response | None, piece: _Piece | None) -> None:
            try:
                if opened is not None:
                    self._consume(opened, piece)
                    opened.close()
                while not self._abort.is_set():
                    with self._lock:
                        if not queue:
                            return
                        piece = queue.popleft()
                    self._fetch_piece(piece)
            except _Aborted:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                with self._lock:
                    errors.append(exc)
                self._abort.set()

        def spawn(opened=None, piece=None) -> None:
            t = threading.Thread(target=work, args=(opened, piece), daemon=True, name=f"netboot-get-{len(threads)}")
            threads.append(t)
            t.start()

        connections = self.settings.connections
        spawn(response, first)
        for _ in range(min(len(queue), connections - 1)):
            spawn()
        split = not can_split or connections < 2 or first.end is None
        began, got = time.monotonic(), self.received
        try:
            while any(t.is_alive() for t in threads):
                threads[0].join(0.05)
                for t in threads[1:]:
                    t.join(0.001)
                if split or self._abort.is_set() or time.monotonic() - began < SPLIT_AFTER:
                    continue
                split = True
                rate = (self.received - got) / (time.monotonic() - began)
                if rate < ONE_STREAM_ENOUGH and self._split(first, queue):
                    for _ in range(min(len(queue), connections - sum(t.is_alive() for t in threads))):
                        spawn()
        except BaseException:
            self._abort.set()
            raise
        finally:
            self.sink.save()
        if errors:
            raise errors[0]

    def _split(self, piece: _Piece, queue: deque[_Piece]) -> bool:
        """Cut the rest of a running stream's piece into chunks for more connections."""
        with self._lock:
            remaining = piece.end - piece.pos
            if remaining < 2 * MIN_CHUNK:
                return False
            n = self.settings.connections
            cut = piece.pos + max(MIN_CHUNK, remaining // n)
            old_end, piece.end = piece.end, cut
            chunk = self._chunk(old_end - cut)
            queue.extend(_Piece(p, min(old_end, p + chunk)) for p in range(cut, old_end, chunk))
            return True

    def _fetch_piece(self, piece: _Piece) -> None:
        start, end = piece.pos, piece.end
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if self.state.validator():
            headers["If-Range"] = self.state.validator()
        response = self._open(self.final_url, headers)
        try:
            if response.status_code != 206:
                if response.status_code >= 400:
                    raise status_error(response, self.url)
                self._ranges_failed()
            self._check_encoding(response)
            parsed = parse_content_range(response.headers.get("content-range"))
            etag = response.headers.get("etag")
            if parsed != (start, end - 1, self.state.total) or (etag and self.state.etag and etag != self.state.etag):
                self._ranges_failed()
            self._consume(response, piece)
        finally:
            response.close()

    def _ranges_failed(self) -> None:
        self.single_only = True
        with self._lock:
            self._abort.set()
        raise _Restart

    def _consume(self, response: httpx.Response, piece: _Piece) -> None:
        """Write the body into place from piece.pos on, until piece.end (which a split may lower meanwhile) or,
        when the size is unknown, until the body ends."""
        fd = self.sink.fd
        for data in response.iter_raw():
            if self._abort.is_set():
                raise _Aborted
            pos, end = piece.pos, piece.end
            if end is not None and pos + len(data) > end:
                data = data[: end - pos]
            if pos == 0 and _looks_like_html(data):
                raise RemoteError(self.url, "the server answered with an HTML page, not the file")
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], pos + written)
            with self._lock:
                self.state.done.add(pos, pos + len(data))
                prefix = self.state.done.prefix()
                self.received += len(data)
                piece.pos = pos + len(data)
                if time.monotonic() - self._last_save > SAVE_INTERVAL:
                    self._last_save = time.monotonic()
                    self.sink.save()
            self._hasher.advance(prefix)
            self.progress.update(len(data))
            if piece.end is not None and piece.pos >= piece.end:
                return
        if piece.end is not None and piece.pos < piece.end:
            raise RemoteError(self.url, "the server closed the connection before the end of the body", retriable=True)


class _Piece:
    """Bytes [pos, end) still to fetch for one request; `end` None: until the body ends."""

    __slots__ = ("pos", "end")

    def __init__(self, pos: int, end: int | None):
        self.pos, self.end = pos, end


def describe_outcome(url: str, outcome: Outcome) -> str:
    return f"{shown(url)}: {outcome.size} bytes, sha256 {outcome.sha256}"
