"""sha256 of a file while it is being written, in a background thread, so the digest is ready when the last byte
lands."""

from __future__ import annotations

import hashlib
import os
import threading

HASH_CHUNK = 8 << 20  # bytes read back and hashed at a time


class Hasher:
    """sha256 of the contiguous prefix of a file being written, in a thread that follows the writers."""

    def __init__(self, fd: int):
        self.fd = fd
        self.sha = hashlib.sha256()
        self.pos = 0
        self._limit = 0
        self._gen = 0  # bumped by reset(): a chunk read for an older generation is not hashed
        self._stop = False
        self._lock = threading.Lock()  # held while a chunk is hashed
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="netboot-sha256", daemon=True)
        self._thread.start()

    def advance(self, end: int) -> None:
        with self._cond:
            if end > self._limit:
                self._limit = end
                self._cond.notify()

    def reset(self) -> None:
        with self._lock, self._cond:
            self.sha, self.pos, self._limit = hashlib.sha256(), 0, 0
            self._gen += 1

    def _step(self, limit: int, gen: int) -> bool:
        with self._lock:
            if gen != self._gen or self.pos >= limit:
                return False
            data = os.pread(self.fd, min(HASH_CHUNK, limit - self.pos), self.pos)
            if not data:
                return False
            self.sha.update(data)
            self.pos += len(data)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._limit <= self.pos:
                    self._cond.wait()
                if self._stop:
                    return
                limit, gen = self._limit, self._gen
            while not self._stop and self._step(limit, gen):
                pass

    def finish(self, size: int) -> str:
        self.stop()
        self._thread.join()
        while self._step(size, self._gen):
            pass
        if self.pos != size:
            raise OSError(f"could not read back byte {self.pos} of {size} to hash it")
        return self.sha.hexdigest()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
