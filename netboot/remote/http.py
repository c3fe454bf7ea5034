"""The HTTP client netboot fetches with (httpx), and what its failures mean: a one-line reason, and whether trying
again can help."""

from __future__ import annotations

import errno
import socket
import ssl
from typing import TYPE_CHECKING

from netboot.errors import RemoteError
from netboot.sources.net import USER_AGENT, Settings, auth_headers, retriable_status, unauthorized_reason

if TYPE_CHECKING:
    import httpx


# httpcore reads a response 64 KiB at a time, and every read goes through h11's parser: on a fast link (loopback,
# 10 GbE) that parsing, not the network, bounds a Python client to ~400 MB/s. With 1 MiB reads it keeps up with
# curl. The attribute is httpcore's own knob (a class constant read as self.READ_NUM_BYTES).
READ_SIZE = 1 << 20


def _tune_httpcore() -> None:
    try:
        from httpcore._sync.http11 import HTTP11Connection

        if getattr(HTTP11Connection, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
            HTTP11Connection.READ_NUM_BYTES = READ_SIZE
    except ImportError:  # another httpcore layout: keep its default
        pass


def make_client(settings: Settings) -> httpx.Client:
    import httpx  # here, not at the top: layer streaming (netboot.sources.http) does without it (16 MB)

    _tune_httpcore()
    pool = settings.connections + 4
    return httpx.Client(
        timeout=httpx.Timeout(settings.timeout),
        follow_redirects=True,
        max_redirects=settings.max_redirects,
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        # Bytes as stored: a compressed body would break ranges, sizes and the sha256.
        # httpx drops Authorization itself when a redirect leads to another origin.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **auth_headers(settings.token)},
    )


def status_error(response: httpx.Response, url: str | None = None) -> RemoteError:
    code = response.status_code
    phrase = response.reason_phrase or ""
    reason = f"HTTP {code}{' ' + phrase if phrase else ''}"
    if code == 401:
        reason = unauthorized_reason("authorization" in response.request.headers)
    retriable = retriable_status(code)
    return RemoteError(url or str(response.request.url), reason, retriable=retriable, status=code)


def describe(exc: BaseException, settings: Settings) -> tuple[str, bool]:
    """(one-line reason, retriable) for an exception raised while talking to a server."""
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {settings.timeout:g} s (connect timeout)", True
    if isinstance(exc, httpx.ReadTimeout):
        return f"no data for {settings.timeout:g} s (read timeout)", True
    if isinstance(exc, httpx.WriteTimeout | httpx.PoolTimeout):
        return f"timed out after {settings.timeout:g} s", True
    if isinstance(exc, httpx.TooManyRedirects):
        return f"more than {settings.max_redirects} redirects", False
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return str(exc) or type(exc).__name__, False
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({cause.verify_message})", False
    if isinstance(cause, ssl.SSLError):
        return f"TLS error ({cause.reason or cause})", False
    if isinstance(cause, socket.gaierror):
        return "cannot resolve the host name", True
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(exc):
        return "connection refused", True
    if isinstance(cause, ConnectionResetError):
        return "connection reset by the server", True
    if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable", True
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if "incomplete" in text.lower() or "disconnected" in text.lower() or "peer closed" in text.lower():
            return "the server closed the connection before the end of the body", True
        return f"bad HTTP from the server ({text})", True
    if isinstance(exc, httpx.TransportError):
        return str(exc) or type(exc).__name__, True
    return str(exc) or type(exc).__name__, False


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return exc


def as_remote_error(exc: BaseException, url: str, settings: Settings) -> RemoteError:
    if isinstance(exc, RemoteError):
        return exc
    reason, retriable = describe(exc, settings)
    return RemoteError(url, reason, retriable=retriable)
