"""What both HTTP clients (the downloader on httpx, the range streamer on http.client) agree on: who they say
they are, how hard they try, how long they wait between tries, which answers are worth another try, and what a
Content-Range means."""

from __future__ import annotations

import math
import os
import random
import re
import time
from dataclasses import dataclass

from netboot.errors import NetbootError

# ASCII digits of bounded length: a hostile server's 5,000-digit or non-ASCII "number" is no Content-Range at all.
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)\s*$", re.IGNORECASE)
REDIRECTS = (301, 302, 303, 307, 308)


USER_AGENT = "netboot/0.1.0"
TOKEN_ENV = "NETBOOT_TOKEN"


def resolve_token(token: str | None) -> str | None:
    """The bearer token to send: the one given, else $NETBOOT_TOKEN, else none."""
    return token if token is not None else (os.environ.get(TOKEN_ENV) or None)


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def unauthorized_reason(token_sent: bool) -> str:
    """What a 401 means to the user: a token is needed, or the one sent was refused."""
    if token_sent:
        return "HTTP 401 Unauthorized: the server refused the token given (--token or $NETBOOT_TOKEN)"
    return f"HTTP 401 Unauthorized: the server needs a token: give it with --token TOKEN or ${TOKEN_ENV}"

MAX_TIMEOUT = 86400.0  # a day: beyond it a clock's arithmetic, not the network, fails
MAX_RETRIES = 100
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class Settings:
    """How hard to try: `timeout` bounds connecting and any wait for data (a stalled read); a body that arrives
    slower than `min_rate` bytes/s over `timeout` seconds is stalled too (curl's --speed-limit / --speed-time: a
    server that trickles a byte every 2 s never hits a read timeout); a transfer that fails is retried `retries`
    times with exponential backoff (`backoff` seconds, doubling, at most 10 s), resuming where it stopped, but not
    once `patience` seconds (3 timeouts: 30 s by default) have passed without real progress, so a dead server ends
    a transfer in about that long; at most `max_redirects` redirects are followed; `token`, when set, goes to the
    URL's own origin as `Authorization: Bearer TOKEN` (never to another origin a redirect leads to)."""

    timeout: float = 10.0
    min_rate: float = 1000.0  # bytes/s (0: no minimum)
    retries: int = 3
    connections: int = 4
    max_redirects: int = 10
    backoff: float = 0.5
    token: str | None = None

    def __post_init__(self) -> None:
        """The flags these come from, checked once for both clients: finite, and in ranges that make sense."""
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise NetbootError(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT}], not {self.timeout!r}")
        if not 0 <= self.min_rate < math.inf:
            raise NetbootError(f"--min-rate must be a finite number of bytes/s >= 0, not {self.min_rate!r}")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise NetbootError(f"--retries must be between 0 and {MAX_RETRIES}, not {self.retries!r}")
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise NetbootError(f"--connections must be between 1 and {MAX_CONNECTIONS}, not {self.connections!r}")

    @property
    def patience(self) -> float:
        return 3 * self.timeout

    def hopeless(self, failures: int, waited: float) -> bool:
        """Whether to give up after the `failures`-th failure in a row, `waited` seconds after the last progress:
        the retries are spent, or another try (after its backoff) could only end past `patience`."""
        next_end = waited + min(10.0, self.backoff * 2 ** (failures - 1)) * 0.8 + self.timeout
        return failures > self.retries or next_end > self.patience

    def delay(self, failures: int) -> float:
        return min(10.0, self.backoff * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)


class RateCheck:
    """Whether a body keeps up with `settings.min_rate`, averaged over windows of `settings.timeout` seconds."""

    def __init__(self, settings: Settings):
        self.min_rate, self.window = settings.min_rate, settings.timeout
        self.start, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> str | None:
        """Count n bytes received; the reason when the body is too slow, else None."""
        self.bytes += n
        elapsed = time.monotonic() - self.start
        if elapsed < self.window:
            return None
        if self.min_rate and self.bytes < self.min_rate * elapsed:
            return (f"stalled: {self.bytes} bytes in {elapsed:.0f} s, slower than {self.min_rate:g} bytes/s "
                    "(--min-rate)")
        self.start, self.bytes = time.monotonic(), 0
        return None


def sleep_before_retry(settings: Settings, failures: int) -> None:
    time.sleep(settings.delay(failures))


def retriable_status(code: int) -> bool:
    """An HTTP status that another try may cure: a server error, a timeout, too many requests."""
    return code >= 500 or code in (408, 425, 429)


def parse_content_range(value: str | None, consistent: bool = True) -> tuple[int, int, int] | None:
    """(first, last, total) of a `Content-Range: bytes first-last/total`; None when it is absent, unknown (`*`) or,
    with `consistent`, when first <= last < total does not hold (the range streamer compares the three numbers with
    what it asked for instead, to say what the server sent)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m or m.group(3) == "*":
        return None
    first, last, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return (first, last, total) if not consistent or first <= last < total else None
