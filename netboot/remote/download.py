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

import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import httpx

from netboot.errors import IntegrityError, RemoteError, RestartTransfer, TransferAborted, note, shown
from netboot.remote.hasher import Hasher
from netboot.remote.http import as_remote_error, status_error
from netboot.remote.progress import Progress
from netboot.remote.sinks import Intervals, Sink
from netboot.sources.net import RateCheck, Settings, parse_content_range, sleep_before_retry

MiB = 1 << 20
MIN_CHUNK = 4 * MiB  # the smallest piece one request of a parallel transfer asks for
MAX_CHUNK = 64 * MiB
SPLIT_AFTER = 0.3  # seconds of a single stream before deciding whether to add connections
ONE_STREAM_ENOUGH = 256e6  # bytes/s: a stream this fast is not split (see Transfer._workers)
SAVE_INTERVAL = 1.0  # seconds between writes of the resume state
PROGRESS_RESET = 4 * MiB  # a failed round that still received this much does not count against the retries
MAX_RESTARTS = 3  # a file that changes under us (or ranges that do not add up) restarts from 0 at most this often


@dataclass
class Outcome:
    """How a transfer ended: the cached copy is current (not_modified), or the bytes received and verified."""

    not_modified: bool = False
    sha256: str | None = None
    size: int = 0
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    received: int = 0  # body bytes received by this transfer (resumed bytes not counted)


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
        progressed = time.monotonic()  # when the transfer last made real progress
        try:
            while True:
                before = self.state.done.total()
                began = time.monotonic()
                try:
                    outcome = self._round()
                    if outcome is not None:
                        return outcome
                    return self._finish()
                except RestartTransfer:
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
                        failures, progressed = 0, time.monotonic()  # real progress: the count bounds failures in a row
                    failures += 1
                    self._give_up_or_say(err, failures, began, progressed)
                    self.sink.save()
                    sleep_before_retry(self.settings, failures)
        finally:
            self._hasher.stop()
            self.sink.save()

    def _give_up_or_say(self, err: RemoteError, failures: int, began: float, progressed: float) -> None:
        """After the `failures`-th failed round in a row: raise `err` (marked unreachable) once the retries are
        spent or the transfer has gone `patience` seconds without progress; else, for a round that failed slowly
        (a timeout, a stall), say on stderr that it is tried again: a long wait is never silent."""
        now = time.monotonic()
        waited = now - progressed
        if self.settings.hopeless(failures, waited):
            err.unreachable = True
            if failures <= self.settings.retries:  # retries left, but no hope: say why they were not used
                err.reason = f"{err.reason} (gave up after {failures} tries in {waited:.0f} s without progress)"
                err.args = (f"{shown(err.url)}: {err.reason}",)
            raise err from None
        if now - began >= 2.0:
            note(f"{shown(err.url)}: {err.reason}; trying again ({failures} of {self.settings.retries} retries)")

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
            raise RestartTransfer
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
            raise RestartTransfer
        first, last, total = parsed
        self._check_expected(total)
        if self._unchanged(etag, total):
            return Outcome(True, None, total, etag, modified, self.final_url)
        if st.total is not None and (total != st.total or (st.etag and etag and etag != st.etag)):
            self._reset()  # the file changed since the partial download (a server that ignores If-Range)
            raise RestartTransfer
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
            except TransferAborted:
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
        raise RestartTransfer

    def _consume(self, response: httpx.Response, piece: _Piece) -> None:
        """Write the body into place from piece.pos on, until piece.end (which a split may lower meanwhile) or,
        when the size is unknown, until the body ends."""
        fd = self.sink.fd
        rate = RateCheck(self.settings)
        for data in response.iter_raw():
            if self._abort.is_set():
                raise TransferAborted
            stalled = rate.add(len(data))
            if stalled:
                raise RemoteError(self.url, stalled, retriable=True)
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
