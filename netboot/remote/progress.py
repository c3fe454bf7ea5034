"""Download progress on stderr: a tqdm bar (bytes, MB/s, ETA) on a terminal; plain periodic lines when asked for
with no terminal (--progress); nothing when stderr is not a terminal or with --quiet."""

from __future__ import annotations

import os
import sys
import threading
import time

PLAIN_INTERVAL = 1.0


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class Progress:
    """Bytes of one file. `mode`: "auto" (a bar when stderr is a terminal), "on" (a bar, or plain lines when stderr
    is not a terminal), "off". update() may be called from several threads."""

    def __init__(self, name: str, mode: str = "auto"):
        self.name = name
        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.kind = "off" if mode == "off" or (mode == "auto" and not tty) else ("bar" if tty else "plain")
        self._lock = threading.Lock()
        self._bar = None
        self.total: int | None = None
        self.done = 0
        self._initial = 0
        self._start = time.monotonic()
        self._last_line = self._start

    def start(self, total: int | None, initial: int = 0) -> None:
        with self._lock:
            self.total, self.done, self._initial = total, initial, initial
            self._start = self._last_line = time.monotonic()
            if self.kind == "bar":
                from tqdm import tqdm

                if self._bar is not None:
                    self._bar.close()
                try:
                    size = os.get_terminal_size(sys.stderr.fileno())
                    sized = size.columns > 0 and size.lines > 0
                except (OSError, ValueError):
                    sized = False
                # A terminal that reports no size (a bare pty: 0x0) would make tqdm hide the bar.
                fixed = {} if sized else {"ncols": 80, "nrows": 20}
                self._bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1000,
                                 desc=self.name, file=sys.stderr, dynamic_ncols=sized, mininterval=0.2, leave=True,
                                 smoothing=0.1, **fixed)

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            elif self.kind == "plain":
                now = time.monotonic()
                if now - self._last_line >= PLAIN_INTERVAL:
                    self._last_line = now
                    self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._initial) / elapsed
        text = f"netboot: {self.name}: {_mb(self.done)}"
        if self.total:
            text += f" / {_mb(self.total)} ({100 * self.done / self.total:.0f}%)"
        text += f", {rate / 1e6:.1f} MB/s"
        if self.total and rate > 0:
            eta = (self.total - self.done) / rate
            text += f", ETA {int(eta // 60)}:{int(eta % 60):02d}"
        print(text, file=sys.stderr, flush=True)

    def close(self, ok: bool = True) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self.kind == "plain" and ok:
                elapsed = max(time.monotonic() - self._start, 1e-9)
                got = self.done - self._initial
                print(f"netboot: {self.name}: {_mb(got)} in {elapsed:.1f} s ({got / elapsed / 1e6:.1f} MB/s)",
                      file=sys.stderr, flush=True)
