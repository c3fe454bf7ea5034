"""The model server: read-only HTTP/1.1 (and 1.0) over a directory, on aiohttp's low-level server.

- GET and HEAD only (anything else: 405). With a token, every request needs `Authorization: Bearer TOKEN` (401).
- Files: `Accept-Ranges: bytes`, a strong ETag (size and mtime_ns) and Last-Modified; If-Match,
  If-Unmodified-Since (412), If-None-Match, If-Modified-Since (304), If-Range; one range -> 206 with Content-Range,
  several -> 206 multipart/byteranges, none satisfiable -> 416 with `Content-Range: bytes */SIZE`
  (netboot.fileserver.ranges). Bodies go out with `loop.sendfile` (kernel sendfile) straight from the open file, in
  chunks sized to the client's pace: no file is ever read into memory. A client that stops reading (takes less
  than MIN_CHUNK within `send_timeout` seconds) is disconnected.
- `GET /models` and `GET /models/NAME`: the catalog (netboot.fileserver.catalog), re-checked by stat on every request;
  `GET /models` also lists the files that look like models but cannot be read ("problems"), never failing for them.
  A file under the root that is itself named models/NAME is still served when NAME is not a model's name.
- Paths: the raw request target is split on "/" before percent-decoding; a segment that decodes to something
  containing "/", "\\" or NUL, or that starts with "." (so "..", "." and hidden names), is refused (404), as is
  anything whose real path (symlinks resolved) is outside the root or hidden inside it, and anything that is not a
  regular file (directories included: there are no listings).
- Slow clients: a connection must deliver a complete request head within `request_timeout` seconds of opening or
  of the end of its previous response (so idle keep-alive connections close too); header lines are limited to
  MAX_LINE bytes (400 beyond).
- Access log: one JSON line per request on the log stream (stderr): {"time", "client", "port" (the client's
  source port: which connection), "method", "path", "status", "bytes", "duration", "range"}.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import mimetypes
import os
import re
import secrets
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote

from aiohttp import web
from aiohttp.log import access_logger
from aiohttp.web_protocol import RequestHandler

from netboot.errors import Unsatisfiable
from netboot.fileserver.catalog import Catalog, etag, is_hidden, render_entry
from netboot.fileserver.log import AccessLog, peer_port, server_logger, write_log
from netboot.fileserver.ranges import (
    http_date,
    if_range_allows,
    parse_range,
    preconditions,
    unsatisfied_content_range,
)

REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 60.0
MAX_LINE = 8190  # request line and each header line (aiohttp's max_line_size / max_field_size)
ALLOWED = "GET, HEAD"
FD_RESERVE = 64  # descriptors kept for the process itself: the listeners, hashing, the log, imports
MIN_CHUNK, MAX_CHUNK = 64 << 10, 64 << 20
CHUNK_SECONDS = 0.5
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


class Connection(RequestHandler):
    """aiohttp's connection handler plus a deadline: a complete request head must arrive within `request_timeout`
    seconds of the connection opening or of the previous response ending, else the connection is closed; counted
    in `counter` (the connections open) while it lives."""

    def __init__(self, manager, *, request_timeout: float, counter: Counter, **kwargs):
        super().__init__(manager, **kwargs)
        self.request_timeout = request_timeout
        self.deadline: asyncio.TimerHandle | None = None
        self.counter = counter
        counter.open += 1  # from creation: the protocol and its socket exist from here until connection_lost

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.arm()

    def connection_lost(self, exc) -> None:
        self.counter.open -= 1
        self.disarm()
        super().connection_lost(exc)

    def arm(self) -> None:
        self.disarm()
        self.deadline = asyncio.get_running_loop().call_later(self.request_timeout, self._expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()


class Counter:
    """Connections open, and the last time a refusal was logged (at most one line a second)."""

    def __init__(self):
        self.open = 0
        self.refused = 0
        self.logged = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.logged < 1.0:
            return False
        self.logged = now
        return True


class Refuse(asyncio.Protocol):
    """A connection over the limit: 503 with `Retry-After`, then closed, without reading the request."""

    def connection_made(self, transport) -> None:
        transport.write(BUSY)
        transport.close()


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 57\r\nRetry-After: 1\r\n"
        b"Connection: close\r\n\r\n503 Service Unavailable: too many connections, try again\n")


def default_max_connections() -> int:
    """Half of what the descriptor limit leaves after a reserve (a connection may hold a socket and an open file),
    between 8 and 1024."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return 1024
    except (ImportError, OSError, ValueError):
        return 256
    return max(8, min(1024, (soft - FD_RESERVE) // 2))


class ModelServer:
    def __init__(self, root: str | Path, *, token: str | None = None, request_timeout: float = REQUEST_TIMEOUT,
                 send_timeout: float = SEND_TIMEOUT, log: TextIO = sys.stderr, max_connections: int | None = None):
        self.root = Path(root).resolve()
        self.catalog = Catalog(self.root)
        self.token = f"Bearer {token}".encode() if token is not None else None
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.log = log
        self.max_connections = max_connections or default_max_connections()
        self.connections = Counter()
        self.server: web.Server | None = None
        self.listeners: list[asyncio.AbstractServer] = []
        self._catalog_lock = asyncio.Lock()

    # -- life cycle -----------------------------------------------------------------------------------------------

    async def refresh_catalog(self) -> list[dict[str, Any]]:
        """The catalog re-checked; when that fails as a whole (a bug, a directory gone), the last one known, and one
        line in the log: the files are still served."""
        async with self._catalog_lock:
            try:
                return await asyncio.to_thread(self.catalog.refresh)
            except Exception as e:  # noqa: BLE001 - the server outlives any one bad scan
                server_logger(self.log).error("cannot index %s: %s: %s", self.root, type(e).__name__, e)
                return self.catalog.entries

    async def listen(self, host: str, port: int) -> list[tuple[str, int]]:
        """Bind and accept; returns the bound (address, port) pairs."""
        AccessLog.stream = self.log
        self.server = web.Server(self.handle, access_log_class=AccessLog)
        kwargs = dict(loop=asyncio.get_running_loop(), keepalive_timeout=self.request_timeout,
                      access_log_class=AccessLog, access_log=access_logger, max_line_size=MAX_LINE,
                      max_field_size=MAX_LINE, logger=server_logger(self.log))

        def factory() -> asyncio.Protocol:
            if self.connections.open >= self.max_connections:
                return self._refuse()
            return Connection(self.server, request_timeout=self.request_timeout, counter=self.connections, **kwargs)

        asyncio.get_running_loop().set_exception_handler(self._loop_exception)

        listener = await asyncio.get_running_loop().create_server(factory, host, port, reuse_address=True,
                                                                   backlog=1024)
        self.listeners.append(listener)
        return [s.getsockname()[:2] for s in listener.sockets]

    def _refuse(self) -> Refuse:
        self.connections.refused += 1
        if self.connections.due():
            server_logger(self.log).warning("%d connection(s) refused with 503: %d open, the limit "
                                            "(--max-connections)", self.connections.refused, self.connections.open)
            self.connections.refused = 0
        return Refuse()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's report of an accept that failed for want of descriptors comes once per pending connection (a
        thousand a second, with tracebacks): one line a second at most instead; anything else as asyncio says."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            if self.connections.due():
                server_logger(self.log).warning("cannot accept connections: %s (%d open; lower --max-connections "
                                                "or raise ulimit -n)", exc.strerror or exc, self.connections.open)
            return
        loop.default_exception_handler(context)

    async def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        if self.server is not None:
            await self.server.shutdown(1.0)
        for listener in self.listeners:
            try:
                await asyncio.wait_for(listener.wait_closed(), 2.0)
            except TimeoutError:
                pass

    # -- requests -------------------------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, Connection):
            protocol.disarm()
        request["netboot.logged"] = True
        started = time.monotonic()
        response: web.StreamResponse | None = None
        status = 500
        try:
            response = await self.dispatch(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            sent = 0
            if response is not None and request.method != "HEAD":
                if "netboot.sent" in response:
                    sent = response["netboot.sent"]
                else:
                    body = getattr(response, "body", None)
                    sent = len(body) if isinstance(body, bytes) else response.body_length
            write_log(self.log, request.remote, request.method, request.raw_path, status, sent,
                      time.monotonic() - started, request.headers.get("Range"), peer_port(request))
            if isinstance(protocol, Connection):
                protocol.arm()

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.token is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self.token):
                return _text(401, "401 Unauthorized: this server needs 'Authorization: Bearer TOKEN'\n",
                             {"WWW-Authenticate": 'Bearer realm="netboot"'})
        if request.method not in ("GET", "HEAD"):
            return _text(405, "405 Method Not Allowed: this server is read-only\n", {"Allow": ALLOWED})
        raw = request.raw_path.split("?", 1)[0].split("#", 1)[0]
        if not raw.startswith("/"):
            return _text(400, "400 Bad Request: the request target must be a path\n")
        segments = _segments(raw)
        if segments is None:
            return _not_found()
        if segments == ["models"] or segments == ["models", ""]:
            await self.refresh_catalog()
            return _json(200, {"models": self.catalog.render(self.base_url(request)),
                               "problems": self.catalog.render_problems()})
        if segments[:1] == ["models"] and len(segments) > 1:
            name = "/".join(s for s in segments[1:] if s)
            await self.refresh_catalog()
            entry = next((e for e in self.catalog.entries if e["name"] == name), None)
            if entry is not None:
                return _json(200, render_entry(entry, self.base_url(request)))
            if self.resolve(segments) is None:
                return _json(404, {"error": f"no model named {name!r}"})
        path = self.resolve(segments)
        if path is None:
            return _not_found()
        return await self.serve_file(request, path)

    def base_url(self, request: web.BaseRequest) -> str:
        """http://HOST[:PORT] from the request's Host header (so a client elsewhere gets URLs it can use), or from
        the socket the request came in on when the header is missing or malformed."""
        host = request.headers.get("Host", "")
        if not _HOST.fullmatch(host):
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            if not sock:
                return "http://127.0.0.1"
            address, port = sock[:2]
            host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return f"http://{host}"

    def resolve(self, segments: list[str]) -> str | None:
        """The real path of the regular file `segments` names under the root, or None."""
        if not segments or any(s == "" for s in segments):
            return None  # the root, a directory (trailing "/"), or an empty segment ("//")
        candidate = os.path.join(self.root, *segments)
        real = os.path.realpath(candidate)
        root = str(self.root)
        if real != root and not real.startswith(root + os.sep):
            return None
        rel = os.path.relpath(real, root)
        if rel == "." or is_hidden(rel.replace(os.sep, "/")) or not os.path.isfile(real):
            return None
        return real

    async def serve_file(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return _not_found()
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return _not_found()
            size, mtime = st.st_size, int(st.st_mtime)
            tag = etag(size, st.st_mtime_ns)
            ctype = mimetypes.guess_type(path)[0] if path.endswith(".json") else None
            ctype = ctype or "application/octet-stream"
            headers = {"ETag": tag, "Last-Modified": http_date(mtime), "Accept-Ranges": "bytes"}
            verdict = preconditions(request.method, request.headers, tag, mtime)
            if verdict == 304:
                return web.Response(status=304, headers=headers)
            if verdict == 412:
                return _text(412, "412 Precondition Failed\n", headers)
            ranges = None
            if request.method == "GET" and if_range_allows(request.headers.get("If-Range"), tag, mtime):
                try:
                    ranges = parse_range(request.headers.get("Range"), size)
                except Unsatisfiable:
                    return _text(416, "416 Range Not Satisfiable\n",
                                 {**headers, "Content-Range": unsatisfied_content_range(size)})
            if ranges is None:
                status, spans, trailer = 200, [(b"", 0, size)], b""
                headers["Content-Type"] = ctype
            elif len(ranges) == 1:
                r = ranges[0]
                status, spans, trailer = 206, [(b"", r.start, r.length)], b""
                headers["Content-Type"] = ctype
                headers["Content-Range"] = r.content_range(size)
            else:
                boundary = secrets.token_hex(16)
                status, trailer = 206, f"\r\n--{boundary}--\r\n".encode()
                spans = [(f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: {r.content_range(size)}"
                          "\r\n\r\n".encode(), r.start, r.length) for r in ranges]
                headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = sum(len(p) + n for p, _, n in spans) + len(trailer)
            response["netboot.sent"] = 0
            corked = request.method == "GET" and response.content_length > 0 and _cork(request, True)
            try:
                await response.prepare(request)
                if request.method != "HEAD":
                    for prefix, offset, count in spans:
                        if prefix:
                            await response.write(prefix)
                            response["netboot.sent"] += len(prefix)
                        if count:
                            await self._send(request, response, f, offset, count)
                    if trailer:
                        await response.write(trailer)
                        response["netboot.sent"] += len(trailer)
                await response.write_eof()
            except ConnectionError:
                # The client went away, stalled, or the file shrank: the body cannot be completed, so the connection
                # ends here (the access log's "bytes" tells how far it got).
                if request.transport is not None:
                    request.transport.abort()
            finally:
                if corked:
                    _cork(request, False)
            return response

    async def _send(self, request: web.BaseRequest, response: web.StreamResponse, f, offset: int, count: int) -> None:
        """Bytes [offset, offset + count) of f to the client with the kernel's sendfile, in chunks sized to take
        about CHUNK_SECONDS at the client's pace (doubling at most from one to the next, like TCP's slow start); a
        chunk not taken within send_timeout (a client that stopped reading: less than MIN_CHUNK in that time), or a
        file that shrank, ends the connection."""
        loop = asyncio.get_running_loop()
        transport = request.transport
        sent, chunk = 0, MIN_CHUNK
        while sent < count:
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client went away")
            n = min(chunk, count - sent)
            began = loop.time()
            try:
                done = await asyncio.wait_for(loop.sendfile(transport, f, offset + sent, n), self.send_timeout)
            except TimeoutError:
                raise ConnectionResetError(f"the client took no data for {self.send_timeout:g} s") from None
            sent += done
            response["netboot.sent"] += done
            if done < n:
                raise ConnectionResetError("the file shrank while it was being sent")
            rate = done / max(loop.time() - began, 1e-6)
            chunk = int(min(2 * chunk, MAX_CHUNK, max(MIN_CHUNK, rate * CHUNK_SECONDS)))


def _cork(request: web.BaseRequest, on: bool) -> bool:
    """TCP_CORK (Linux; TCP_NOPUSH elsewhere) around a file body, as nginx's `tcp_nopush on`: the headers and the
    body leave in full-sized segments rather than with a short one at the end of every sendfile call; taking the
    cork off sends what is left. Measured on loopback: single downloads about 15% faster."""
    option = getattr(socket, "TCP_CORK", None) or getattr(socket, "TCP_NOPUSH", None)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if option is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1 if on else 0)
    except OSError:
        return False
    return True


def _segments(raw: str) -> list[str] | None:
    """The decoded path segments of a raw absolute path, or None when one is not acceptable."""
    out = []
    for part in raw[1:].split("/"):
        try:
            seg = unquote(part, errors="strict")
        except UnicodeDecodeError:
            return None
        if "/" in seg or "\\" in seg or "\x00" in seg or seg.startswith("."):
            return None
        out.append(seg)
    return out


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=body, headers=headers)


def _json(status: int, data: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json",
                        headers={"Cache-Control": "no-cache"})


def _not_found() -> web.Response:
    return _text(404, "404 Not Found\n")
