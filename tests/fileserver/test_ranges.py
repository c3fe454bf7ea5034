"""Range and conditional-request logic of `netboot serve` (netboot.fileserver.ranges), as pure functions."""

from __future__ import annotations

import pytest

from netboot.errors import Unsatisfiable
from netboot.fileserver.ranges import (
    ByteRange,
    coalesce,
    http_date,
    if_range_allows,
    parse_etags,
    parse_http_date,
    parse_range,
    preconditions,
    unsatisfied_content_range,
)

R = ByteRange


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-0", 100, [R(0, 1)]),  # first byte
    ("bytes=99-99", 100, [R(99, 100)]),  # last byte
    ("bytes=-1", 100, [R(99, 100)]),  # last byte, as a suffix
    ("bytes=0-99", 100, [R(0, 100)]),  # the whole file
    ("bytes=0-", 100, [R(0, 100)]),
    ("bytes=10-", 100, [R(10, 100)]),
    ("bytes=10-1000", 100, [R(10, 100)]),  # last-pos past the end is clamped
    ("bytes=-10", 100, [R(90, 100)]),
    ("bytes=-1000", 100, [R(0, 100)]),  # a suffix longer than the file is the file
    ("bytes=5-5", 6, [R(5, 6)]),
    ("Bytes = 1-2", 10, [R(1, 3)]),  # unit case-insensitive, blanks around "="
    ("bytes=0-1,4-5", 10, [R(0, 2), R(4, 6)]),  # multipart, in order
    ("bytes=4-5,0-1", 10, [R(4, 6), R(0, 2)]),  # kept in the asked order when disjoint
    ("bytes=0-1, 4-5 ,", 10, [R(0, 2), R(4, 6)]),  # blanks and empty list elements
    ("bytes=0-5,3-8", 10, [R(0, 9)]),  # overlapping: merged
    ("bytes=0-1,2-3", 10, [R(0, 4)]),  # adjacent: merged
    ("bytes=0-,0-,0-", 10, [R(0, 10)]),  # no amplification
    ("bytes=0-1,50-60", 10, [R(0, 2)]),  # the unsatisfiable range is dropped
    ("bytes=-0,2-3", 10, [R(2, 4)]),
])
def test_satisfiable(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header, size", [
    ("bytes=100-", 100),  # first-pos at the end
    ("bytes=100-200", 100),
    ("bytes=-0", 100),  # zero suffix
    ("bytes=0-", 0),  # zero-length file
    ("bytes=0-0", 0),
    ("bytes=-5", 0),
    ("bytes=5-2", 100),  # last-pos before first-pos: invalid, rejected
    ("bytes=abc", 100),
    ("bytes=", 100),
    ("bytes=-", 100),
    ("bytes=1-2-3", 100),
    ("bytes=--5", 100),
    ("bytes=+1-2", 100),
    ("bytes= 1 - 2", 100),
])
def test_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@pytest.mark.parametrize("header", [None, "items=0-5", "0-5", "none"])
def test_ignored(header):
    assert parse_range(header, 100) is None


def test_too_many_ranges_are_ignored():
    many = "bytes=" + ",".join(f"{i * 3}-{i * 3}" for i in range(200))
    assert parse_range(many, 1000) is None
    assert len(parse_range(many, 1000, max_ranges=500)) == 200


def test_content_range_strings():
    assert R(0, 1).content_range(100) == "bytes 0-0/100"
    assert R(90, 100).content_range(100) == "bytes 90-99/100"
    assert R(0, 100).length == 100
    assert unsatisfied_content_range(0) == "bytes */0"


def test_coalesce_keeps_disjoint_order():
    assert coalesce([R(8, 9), R(0, 2)]) == [R(8, 9), R(0, 2)]
    assert coalesce([R(8, 9), R(0, 2), R(1, 8)]) == [R(0, 9)]


def test_etag_lists():
    assert parse_etags('"a", W/"b" ,"c"') == [(False, '"a"'), (True, '"b"'), (False, '"c"')]
    assert parse_etags("*") == [(False, "*")]
    assert parse_etags("a, b") is None
    assert parse_etags('"a" "b"') is None


def test_http_dates():
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777  # RFC 850
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777  # asctime
    assert parse_http_date("yesterday") is None
    assert parse_http_date("") is None
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


TAG = '"10-abc"'
MTIME = 784111777
LM = http_date(MTIME)


@pytest.mark.parametrize("method, headers, expected", [
    ("GET", {}, None),
    ("GET", {"If-None-Match": TAG}, 304),
    ("HEAD", {"If-None-Match": TAG}, 304),
    ("GET", {"If-None-Match": f'"x", W/{TAG}'}, 304),  # weak comparison
    ("GET", {"If-None-Match": "*"}, 304),
    ("GET", {"If-None-Match": '"other"'}, None),
    ("GET", {"If-None-Match": '"other"', "If-Modified-Since": LM}, None),  # INM present: IMS ignored
    ("GET", {"If-Modified-Since": LM}, 304),
    ("GET", {"If-Modified-Since": http_date(MTIME + 60)}, 304),
    ("GET", {"If-Modified-Since": http_date(MTIME - 1)}, None),
    ("GET", {"If-Modified-Since": "garbage"}, None),
    ("GET", {"If-Match": TAG}, None),
    ("GET", {"If-Match": '"other"'}, 412),
    ("GET", {"If-Match": f"W/{TAG}"}, 412),  # strong comparison
    ("GET", {"If-Unmodified-Since": http_date(MTIME - 1)}, 412),
    ("GET", {"If-Unmodified-Since": LM}, None),
])
def test_preconditions(method, headers, expected):
    assert preconditions(method, headers, TAG, MTIME) == expected


@pytest.mark.parametrize("value, allowed", [
    (None, True),
    (TAG, True),
    ('"other"', False),
    (f"W/{TAG}", False),  # a weak tag never matches
    (LM, True),
    (http_date(MTIME + 1), False),
    (http_date(MTIME - 1), False),
    ("not a date", False),
])
def test_if_range(value, allowed):
    assert if_range_allows(value, TAG, MTIME) is allowed
