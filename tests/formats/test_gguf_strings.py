"""GGUF string arrays: the windowed, numpy-found walk over the length prefixes (`_Cursor._strings`) gives what a
plain walk over every prefix gives, bounds and errors alike, whatever the strings hold."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest

import netboot.formats.gguf as gguf
from netboot.errors import TruncatedHeader
from netboot.formats.gguf import _Cursor

PATH = Path("m.gguf")


def plain_walk(buf: bytes, pos: int, count: int) -> tuple[bytes, list[int], list[int], int]:
    """The reference: one prefix at a time (netboot's walk before the numpy one)."""
    start, end = pos, len(buf)
    starts, lengths = [], []
    for _ in range(count):
        if pos + 8 > end:
            raise TruncatedHeader(f"{PATH}: GGUF string array runs past the end of the file")
        (n,) = struct.unpack_from("<Q", buf, pos)
        if n > end - pos - 8:
            raise TruncatedHeader(f"{PATH}: GGUF string array runs past the end of the file")
        starts.append(pos + 8 - start)
        lengths.append(n)
        pos += 8 + n
    return buf[start:pos], starts, lengths, pos


def walked(buf: bytes, pos: int, count: int):
    cur = _Cursor(memoryview(buf), PATH)
    cur.pos = pos
    arr = cur._strings(count)
    assert arr.starts.dtype == np.int64 and arr.lengths.dtype == np.int64
    return arr.blob, arr.starts.tolist(), arr.lengths.tolist(), cur.pos


def outcome(fn, *args):
    try:
        return fn(*args)
    except TruncatedHeader as exc:
        return ("raised", type(exc), str(exc))


def same(buf: bytes, pos: int, count: int) -> None:
    assert outcome(walked, buf, pos, count) == outcome(plain_walk, buf, pos, count)


def encode(strings: list[bytes]) -> bytes:
    return b"".join(struct.pack("<Q", len(s)) + s for s in strings)


def random_string(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return b""
    if kind < 0.2:
        return b"\x00" * rng.randint(1, 12) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
    if kind < 0.3:  # NUL runs inside, and lengths whose low byte is zero
        return b"a" + b"\x00" * rng.randint(1, 9) + b"b" * rng.choice([0, 1, 254, 255, 510])
    if kind < 0.35:
        return bytes(rng.randrange(256) for _ in range(rng.choice([256, 300, 1000, 70000])))
    return "".join(rng.choice("ab▁日<>0x\n ") for _ in range(rng.randint(1, 12))).encode()


@pytest.mark.parametrize("seed", range(40))
def test_random_arrays_match_the_plain_walk(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(gguf, "_MAX_WINDOW", rng.choice([64, 200, 4096, 1 << 22]))
    strings = [random_string(rng) for _ in range(rng.randint(0, 400))]
    head = bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
    tail = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))) + encode([b"xy", b"", b"zzz"])
    buf = head + encode(strings) + tail
    same(buf, len(head), len(strings))
    same(buf, len(head), max(0, len(strings) - rng.randint(0, 3)))  # fewer than there are
    same(buf, len(head), len(strings) + rng.randint(1, 5))  # more: the tail is read as strings, or refused


@pytest.mark.parametrize("seed", range(10))
def test_every_truncation_and_corrupt_length_is_refused_alike(seed, monkeypatch):
    rng = random.Random(100 + seed)
    monkeypatch.setattr(gguf, "_MAX_WINDOW", rng.choice([64, 1 << 22]))
    strings = [random_string(rng) for _ in range(30)]
    strings = [s[:300] for s in strings]
    buf = encode(strings)
    for cut in range(0, len(buf) + 1, max(1, len(buf) // 150)):
        same(buf[:cut], 0, len(strings))
    prefixes = plain_walk(buf, 0, len(strings))[1]
    for _ in range(40):
        at = rng.choice(prefixes) - 8
        value = rng.choice([0, 1, 7, 255, 256, 1 << 24, (1 << 24) - 1, 2**63, 2**64 - 2, len(buf), rng.randrange(64)])
        bad = buf[:at] + struct.pack("<Q", value) + buf[at + 8 :]
        same(bad, 0, len(strings))


def test_empty_and_nul_strings_and_long_ones():
    cases = [
        [b""] * 50,
        [b"\x00"] * 50,
        [b"\x00" * 9, b"a", b"", b"", b"b\x00\x00\x00\x00\x00\x00\x00\x00c", b"d"] * 20,
        [b"x" * 256, b"y" * 512, b"z" * 65536, b"w"],
        [b"a" * ((1 << 24) + 3), b"b", b"c"],  # a length the candidates (below 2^24) never hold
    ]
    for strings in cases:
        buf = encode(strings)
        same(buf, 0, len(strings))
        same(buf + b"\x01" * 20, 0, len(strings) + 1)


def test_a_count_past_the_buffer_is_refused():
    buf = encode([b"ab", b"cd"])
    same(buf, 0, 3)
    same(buf[:-1], 0, 2)
    same(b"", 0, 1)
    same(b"", 0, 0)
