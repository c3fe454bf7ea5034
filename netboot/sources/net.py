"""What both HTTP clients (the downloader on httpx, the range streamer on http.client) agree on: who they say
they are, how hard they try, how long they wait between tries, which answers are worth another try, and what a
Content-Range means."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
REDIRECTS = (301, 302, 303, 307, 308)


USER_AGENT = "netboot/0.1.0"


@dataclass(frozen=True)
class Settings:
    """How hard to try: `timeout` bounds connecting and any wait for data (a stalled read); a transfer that fails
    is retried `retries` times with exponential backoff (`backoff` seconds, doubling, at most 10 s), resuming where
    it stopped; at most `max_redirects` redirects are followed."""

    timeout: float = 30.0
    retries: int = 3
    connections: int = 4
    max_redirects: int = 10
    backoff: float = 0.5

    def delay(self, failures: int) -> float:
        return min(10.0, self.backoff * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)


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
