"""The digests a catalog publishes for byte spans, and the one rule for a verified read: read, check, read again
once, then report the server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import xxhash

from netboot.errors import IntegrityError, note

# The digests a catalog gives for each layer and global tensor span, in the order a reader prefers them: xxh3_128
# is 10x faster to check than sha256 (netboot.fileserver.catalog says why both).
SPAN_DIGESTS = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}

Expected = tuple[str, str]  # (digest name, lowercase hex)
T = TypeVar("T")


def new_digest(name: str) -> Any:
    """A hashlib-like object for a digest a catalog publishes."""
    return SPAN_DIGESTS[name]()


def verified(read: Callable[[int, Any], T], expected: Expected | None, what: str, source: str, where: str = "") -> T:
    """`read(attempt, hasher)` reads the bytes (feeding them to `hasher` when one is given) and returns what it
    made of them. With an `expected` digest the bytes must match it: a mismatch is noted and read again once,
    and a second one is an IntegrityError (naming `what`, then `where` in the file). Without one, the first read is
    taken as it is."""
    for attempt in range(2):
        hasher = new_digest(expected[0]) if expected else None
        result = read(attempt, hasher)
        if hasher is None or hasher.hexdigest() == expected[1]:
            return result
        if attempt == 0:
            note(f"{what} from {source} does not match its {expected[0]}; reading it again")
    raise IntegrityError(source, f"{what}{where} does not match the {expected[0]} the server published, read twice: "
                                 "the server sends corrupt data")
