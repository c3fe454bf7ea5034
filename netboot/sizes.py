"""Sizes as people write them ("500M", "2GB", "300MiB"): the flags', and a cluster node's own budget label."""

from __future__ import annotations

import math

from netboot.errors import NetbootError

UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
         "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """"500M", "2G", "1.5GB", "300MiB", "1000" (bytes) -> bytes (K/M/G/T are powers of 1000, KiB/MiB/... of 1024)."""
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in UNITS or not math.isfinite(value) or value < 0:
        raise NetbootError(f"not a size: {text!r} (e.g. 500M, 2G, 300MiB)")
    return int(value * UNITS[unit])
