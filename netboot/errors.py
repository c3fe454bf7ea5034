"""Every exception netboot raises on purpose, and `note`, the one-line remarks on stderr about something netboot
did on its own (a fallback taken, a bad read done again).

The interfaces turn a `NetbootError` into one line, `netboot: error: ...`, and exit status 1:

    NetbootError                 a problem the user can act on
     +-- FormatError             a file truncated, corrupt or not of the format it claims
     |    +-- TruncatedHeader    a GGUF header runs past the bytes given (a remote header's prefix is then grown)
     +-- UnsupportedError        well-formed, but uses what netboot does not run (architecture, tensor type)
     +-- MemoryBudgetError       --max-memory cannot hold what the run needs even with every weight streamed
     +-- ChatTemplateError       a chat template that does not parse or fails to render
     |    +-- ConversationRejected  a conversation the template refuses (raise_exception, unknown role)
     +-- RequestError            a generation request the engine cannot take as it is (bad field, too long)
     |    +-- ContextLimitError  a prompt at or over the context: reported, never truncated
     +-- CapacityError           the engine is full now (queue, KV memory): try again after `retry_after` s
     +-- RemoteError             a network source failed (reason, retriable, unreachable, HTTP status)
          +-- IntegrityError     bytes that are not the ones expected (sha256, size, span digest): never retried
          +-- RangeNotSupported  a server that answers a Range request with the whole file

`clipped(value)` is how a message quotes a value read from a file: its repr, cut to a few dozen characters, so a
corrupt header never pours its raw bytes into an error line.

Signals that never reach the user, caught by the caller of what raised them:

    Unsatisfiable                a Range header the file server answers with 416
    PartialRead                  a range read that ended early: the bytes that arrived, and why
    RestartTransfer              a download round to start again at once (the file changed under it)
    TransferAborted              a download's parallel pieces told to stop (another one failed)
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit, urlunsplit


def note(message: str) -> None:
    print(f"netboot: {message}", file=sys.stderr, flush=True)


def shown(url: str) -> str:
    """A URL as messages show it: without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class NetbootError(Exception):
    """A problem the user can act on: bad input, a missing file, an unsupported model."""


class FormatError(NetbootError):
    """A model file that is truncated, corrupt or not of the format it claims."""


class TruncatedHeader(FormatError):
    """The header runs past the end of the bytes given: of the file, or of the prefix fetched so far."""


class UnsupportedError(NetbootError):
    """A model that is well-formed but uses something netboot does not run (architecture, tensor type)."""


class MemoryBudgetError(NetbootError):
    """The budget cannot hold what the run needs even with every weight streamed."""


class ChatTemplateError(NetbootError):
    """A chat template that cannot be parsed or rendered."""


class ConversationRejected(ChatTemplateError):
    """A conversation the chat template refuses: its `raise_exception`, a role a built-in format does not know, a
    message that is not a role and a content."""


class RequestError(NetbootError):
    """A generation request the engine cannot take as it is: a field out of range, a prompt it cannot hold."""


class ContextLimitError(RequestError):
    """A prompt that does not fit the context; never truncated silently."""


class CapacityError(NetbootError):
    """The engine cannot take a request now (its queue is full); `retry_after` seconds is a fair wait."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class RemoteError(NetbootError):
    """A network source failed. `reason` is short ("connection refused", "HTTP 404 Not Found"); `retriable` says
    whether trying again may help; `unreachable` (set once retries are spent on a retriable failure) means the
    server could not deliver, as opposed to delivering something wrong."""

    def __init__(self, url: str, reason: str, *, retriable: bool = False, status: int | None = None):
        super().__init__(f"{shown(url)}: {reason}")
        self.url = url
        self.reason = reason
        self.retriable = retriable
        self.unreachable = False
        self.status = status


class IntegrityError(RemoteError):
    """The bytes are not the ones expected (sha256 or size): never retried, never cached."""


class RangeNotSupported(RemoteError):
    """The server answers a Range request with the whole file."""


class Unsatisfiable(Exception):
    """416 Range Not Satisfiable: answer with `Content-Range: bytes */SIZE`."""


class PartialRead(Exception):
    """A range read that ended after `received` bytes, for `error`: resumed from the first missing byte."""

    def __init__(self, received: int, error: RemoteError):
        self.received = received
        self.error = error


class RestartTransfer(Exception):
    """Start the download round again at once (the file changed, or ranges cannot be trusted)."""


class TransferAborted(Exception):
    """Stop this piece of a parallel download: another one failed."""


CLIP = 60  # characters of a quoted value a message shows


def clipped(value: object, limit: int = CLIP) -> str:
    """`repr(value)` cut to `limit` characters (then "..."): how messages quote what a file holds."""
    if isinstance(value, (bytes, str)) and len(value) > limit:
        return repr(value[:limit])[:limit] + "..."  # never the repr of all of a 300 MB string
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
