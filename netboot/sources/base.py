"""What every byte source offers: byte ranges read on demand into a caller's buffer, and the page-aligned
buffers they are read into."""

from __future__ import annotations

import mmap
from typing import Protocol

import numpy as np

ALIGN = 4096  # O_DIRECT's alignment on every Linux filesystem (some need only 512)


class ByteSource(Protocol):
    name: str  # what `--explain` prints: the path or URL
    kind: str  # "disk" or "network"
    size: int
    bytes_read: int

    def read(self, offset: int, length: int, buf: np.ndarray) -> np.ndarray: ...
    def stream(self, offset: int, length: int, slot: str = ...): ...  # .read(n, buf): next n bytes; .close()
    def close(self) -> None: ...


def aligned_buffer(nbytes: int) -> np.ndarray:
    """A page-aligned uint8 buffer with room for `nbytes` read at any offset (anonymous memory: resident only once
    written)."""
    size = -(-(nbytes + 2 * ALIGN) // ALIGN) * ALIGN
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)
