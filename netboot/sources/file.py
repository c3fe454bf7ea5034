"""Where streamed weights' bytes come from: byte ranges of a model file, read on demand into a caller's buffer.

`read(offset, length, buf)` fills part of `buf` (page-aligned, at least `length + 2 * ALIGN` bytes) and returns the
view of exactly the bytes asked for, so that a direct read can land at an aligned address without a copy.

- `FileSource`: a local file read with O_DIRECT where the filesystem takes it, so neither this process nor the page
  cache grows with the model; else `pread` followed by `posix_fadvise(DONTNEED)` on what was read.
- `HttpSource`: HTTP Range requests over one persistent keep-alive connection (`netboot.sources.http`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from netboot.sources.base import ALIGN, aligned_buffer


class FileSource:
    kind = "disk"

    def __init__(self, path: str | Path):
        self.name = str(path)
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        self._direct_fd = self._open_direct(path)
        self.bytes_read = 0  # asked for by callers (a direct read also reads the blocks around them)

    @property
    def direct(self) -> bool:
        return self._direct_fd is not None

    def _open_direct(self, path: str | Path) -> int | None:
        flag = getattr(os, "O_DIRECT", 0)
        if not flag or self.size < ALIGN:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | flag)
        except OSError:  # tmpfs and some others refuse O_DIRECT
            return None
        try:
            os.preadv(fd, [memoryview(aligned_buffer(ALIGN))[:ALIGN]], 0)
        except OSError:
            os.close(fd)
            return None
        return fd

    def read(self, offset: int, length: int, buf: np.ndarray) -> np.ndarray:
        if offset < 0 or offset + length > self.size:
            raise ValueError(f"{self.name}: bytes [{offset}, {offset + length}) are outside the file ({self.size})")
        self.bytes_read += length
        if self._direct_fd is not None:
            start = offset - offset % ALIGN
            end = min(-(-(offset + length) // ALIGN) * ALIGN, -(-self.size // ALIGN) * ALIGN)
            self._read_fully(self._direct_fd, buf, start, end - start)
            return buf[offset - start : offset - start + length]
        self._read_fully(self._fd, buf, offset, length)
        os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_DONTNEED)
        return buf[:length]

    def _read_fully(self, fd: int, buf: np.ndarray, offset: int, length: int) -> None:
        view = memoryview(buf)
        done = 0
        while done < length:
            n = os.preadv(fd, [view[done:length]], offset + done)
            if n == 0:
                if offset + done >= self.size:  # a direct read's last block runs past the end of the file
                    return
                raise OSError(f"{self.name}: unexpected end of file at byte {offset + done}")
            done += n

    def stream(self, offset: int, length: int, slot: str = "stream") -> FileStream:
        """Bytes [offset, offset + length) read piece by piece, in order (as `HttpSource.stream`)."""
        return FileStream(self, offset)

    def close(self) -> None:
        for fd in (self._fd, self._direct_fd):
            if fd is not None:
                os.close(fd)
        self._direct_fd = None


class FileStream:
    def __init__(self, source: FileSource, offset: int):
        self.source, self.pos = source, offset

    def read(self, n: int, buf: np.ndarray) -> np.ndarray:
        raw = self.source.read(self.pos, n, buf)
        self.pos += n
        return raw

    def close(self) -> None:
        pass
