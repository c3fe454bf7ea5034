"""Range requests and conditional requests (RFC 9110 sections 13 and 14), as pure functions of header values: no I/O,
so every edge case is unit-tested on its own (tests/fileserver/test_ranges.py).

    parse_range("bytes=0-99", size)      -> [ByteRange(0, 100)]     206, Content-Range: bytes 0-99/SIZE
    parse_range("bytes=-10", 5)          -> [ByteRange(0, 5)]       a suffix longer than the file is the whole file
    parse_range("bytes=9999-", 10)       -> raises Unsatisfiable    416, Content-Range: bytes */10
    parse_range("items=0-1", size)       -> None                    a unit other than bytes: ignored, 200

Choices where the RFC leaves one:
- a syntactically invalid byte-range set (`bytes=5-2`, `bytes=abc`, `bytes=`) is rejected with 416, as nginx does,
  rather than ignored: a client that asked for a few bytes never gets the whole file instead;
- overlapping or adjacent ranges are merged (sorted) so that `bytes=0-,0-,0-` cannot multiply the response; ranges
  that neither overlap nor touch keep the order they were asked in;
- more than MAX_RANGES ranges (after merging) make the Range header ignored (200, the whole file), like nginx's
  max_ranges;
- positions are ASCII digits only (not other scripts' digits, which int() accepts), of at most MAX_DIGITS digits,
  in a header of at most MAX_HEADER characters: anything else is 416, never a number parsed at any length.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from dataclasses import dataclass

from netboot.errors import Unsatisfiable

MAX_RANGES = 100

MAX_DIGITS = 19  # a position past 10**19 - 1 is no file's; longer numbers are refused before int() sees them
MAX_HEADER = 4096  # characters of a Range header (MAX_RANGES ranges of MAX_DIGITS digits fit easily)

# [0-9], not \d: \d and int() also take other scripts' digits ("\u0661"), which no HTTP client means.
_SPEC = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of the representation."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def unsatisfied_content_range(size: int) -> str:
    return f"bytes */{size}"


def parse_range(header: str | None, size: int, max_ranges: int = MAX_RANGES) -> list[ByteRange] | None:
    """The ranges of a `Range` header to send, in order, for a representation of `size` bytes.

    None: no header, or one to ignore (another unit, too many ranges): send the whole representation (200).
    Raises Unsatisfiable when the header is invalid or none of its ranges overlaps the representation (416).
    """
    if header is None:
        return None
    if len(header) > MAX_HEADER:
        raise Unsatisfiable(f"Range header of {len(header)} characters (at most {MAX_HEADER})")
    unit, sep, ranges_spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in ranges_spec.split(",")]
    specs = [s for s in specs if s]  # empty list elements are allowed and ignored (RFC 9110 5.6.1)
    if not specs:
        raise Unsatisfiable("empty byte-range set")
    out: list[ByteRange] = []
    for spec in specs:
        m = _SPEC.fullmatch(spec)
        if m is None:
            raise Unsatisfiable(f"invalid byte-range-spec {spec!r}")
        first, last, suffix = m.groups()
        if any(g is not None and len(g) > MAX_DIGITS for g in (first, last, suffix)):
            raise Unsatisfiable(f"byte position of more than {MAX_DIGITS} digits in {spec[:40]!r}")
        if suffix is not None:
            n = int(suffix)
            if n == 0 or size == 0:
                continue  # a zero suffix, or an empty representation: nothing to overlap
            out.append(ByteRange(max(0, size - n), size))
            continue
        start = int(first)
        if last:
            end_incl = int(last)
            if end_incl < start:
                raise Unsatisfiable(f"invalid byte-range-spec {spec!r}: last-pos before first-pos")
            end = min(end_incl + 1, size)  # a last-pos past the end is clamped
        else:
            end = size
        if start >= size:
            continue  # does not overlap: unsatisfiable on its own
        out.append(ByteRange(start, end))
    if not out:
        raise Unsatisfiable("no range overlaps the representation")
    out = coalesce(out)
    if len(out) > max_ranges:
        return None
    return out


def coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """The ranges as asked when none overlaps or touches another; otherwise sorted and merged."""
    ordered = sorted(ranges, key=lambda r: r.start)
    if all(a.end < b.start for a, b in zip(ordered, ordered[1:], strict=False)):
        return ranges
    merged = [ordered[0]]
    for r in ordered[1:]:
        last = merged[-1]
        if r.start <= last.end:
            merged[-1] = ByteRange(last.start, max(last.end, r.end))
        else:
            merged.append(r)
    return merged


# -- validators ---------------------------------------------------------------------------------------------------


def parse_etags(header: str) -> list[tuple[bool, str]] | None:
    """An If-Match / If-None-Match list: [(weak, '"opaque"'), ...]; ["*"] is [(False, "*")]; None when malformed."""
    value = header.strip()
    if value == "*":
        return [(False, "*")]
    tags = []
    pos = 0
    while pos < len(value):
        m = _ETAG.match(value, pos)
        if m is None or m.end() == pos:
            return None
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return tags or None


def strong_match(tags: list[tuple[bool, str]], etag: str) -> bool:
    return any(t == "*" or (not weak and t == etag) for weak, t in tags)


def weak_match(tags: list[tuple[bool, str]], etag: str) -> bool:
    opaque = etag[2:] if etag.startswith("W/") else etag
    return any(t in ("*", opaque) for _, t in tags)


def parse_http_date(value: str | None) -> int | None:
    """Seconds since the epoch of an HTTP-date (IMF-fixdate, RFC 850 or asctime), or None when it is not one."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # asctime has no zone: it is GMT
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        return int(parsed.timestamp())
    except (OverflowError, ValueError, OSError):
        return None


def http_date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def preconditions(method: str, headers, etag: str, mtime: int) -> int | None:
    """RFC 9110 13.2.2 for a representation with strong ETag `etag` last modified at `mtime` (whole seconds):
    412 (If-Match / If-Unmodified-Since fail), 304 (If-None-Match / If-Modified-Since say the client's copy is
    current, for GET and HEAD), or None: go on. `headers` is any case-insensitive mapping."""
    if_match = headers.get("If-Match")
    if if_match is not None:
        tags = parse_etags(if_match)
        if tags is None or not strong_match(tags, etag):
            return 412
    else:
        since = parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and mtime > since:
            return 412
    safe = method in ("GET", "HEAD")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        if tags is not None and weak_match(tags, etag):
            return 304 if safe else 412
    elif safe:
        since = parse_http_date(headers.get("If-Modified-Since"))
        if since is not None and mtime <= since:
            return 304
    return None


def if_range_allows(value: str | None, etag: str, mtime: int) -> bool:
    """Whether a Range may be honoured given If-Range `value` (None: no If-Range). An entity tag must match
    strongly (a weak one never does); a date must equal Last-Modified exactly."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag and not value.startswith("W/")
    when = parse_http_date(value)
    return when is not None and when == mtime
