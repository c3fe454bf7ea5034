"""How many threads the products use: the count whose steps are fastest now, measured as the model runs.

On an idle machine that is every core. When another process keeps a core busy, the thread that shares it gets the
core part of the time and each product waits for its last run of rows: with two threads on two cores and one core
taken, decoding measured 0.65x of one thread. No fixed rule knows the machine's load, so `ThreadTuner` times the
steps it is told of (`step`: one forward pass of `size` tokens) and now and then runs a few steps at another count,
keeping whichever was faster on steps of the same size. Probes cost steps at a worse count, so they are made only
where they can win:

- fewer threads, when the threads do not get their cores: the process's CPU time per second of a step falls below
  SHARE of the count (measured 1.94-1.98 of 2 on an idle machine, 1.27-1.47 with one core busy);
- more threads, when the machine's cores were idle enough to run them (the CPU time the OS counts as idle).

A probe that loses comes back half as often (up to MAX_PERIOD steps apart). `--threads N` fixes the count.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FIRST_PROBE = 4  # steps before the first look
FIRST_PERIOD, MAX_PERIOD = 16, 512  # steps between looks: at first, and at most after probes that lost
PROBE = 3  # steps per probe: a median of three is not moved by one step the OS interrupted
KEPT = 8  # recent steps kept per (size, count)
WIN = 0.97  # a probed count replaces the current one when its median step is below this fraction of the current's
SHARE = 0.85  # CPU time per wall second below this fraction of the count: the threads are short of cores
IDLE_SHARE = 0.5  # idle cores per added thread for a probe of more threads to be worth it


def candidates(most: int) -> list[int]:
    """The counts worth trying: most, most / 2, ... 1 (halving: a count between two of them rarely wins by much)."""
    counts = [most]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


class ThreadTuner:
    def __init__(self, most: int, use: Callable[[int], object], clock: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.process_time, idle: Callable[[], float | None] = lambda: None):
        """`use(n)` sets the count; `cpu()` is this process's CPU seconds so far; `idle()` the machine's idle CPU
        seconds so far (None: unknown, then a probe of more threads is always allowed)."""
        self.counts = candidates(most)
        self.current = most
        self._use, self._clock, self._cpu, self._idle = use, clock, cpu, idle
        self._times: dict[tuple[int, int], deque[float]] = {}
        self._shares: deque[float] = deque(maxlen=KEPT)  # the current count's CPU seconds per second, recent steps
        self._idle_since = (clock(), idle())
        self._period = {c: FIRST_PERIOD for c in self.counts}  # steps between probes of each count
        self._since_probe = {c: FIRST_PERIOD for c in self.counts}  # steps since each count's last probe
        self._until_look = FIRST_PROBE
        self._probe: int | None = None  # the count being probed
        self._probe_left = 0
        self._probe_sizes: set[int] = set()

    @contextmanager
    def step(self, size: int) -> Iterator[None]:
        """Times one forward pass of `size` tokens run inside the block, on the thread that computes."""
        if self._probe is None and len(self.counts) > 1 and self._until_look <= 0:
            self._look()
        count = self.current if self._probe is None else self._probe
        start, cpu = self._clock(), self._cpu()
        yield
        seconds = self._clock() - start
        if self._probe is None and seconds > 0:
            self._shares.append((self._cpu() - cpu) / seconds)
        self._record(size, count, seconds)

    def _look(self) -> None:
        """Start a probe of the next count that could win, if any; else look again a little later."""
        short = len(self._shares) >= PROBE and statistics.median(self._shares) < SHARE * self.current
        idle = self._idle_cores()
        self._until_look = FIRST_PERIOD
        for count in self.counts:
            due = self._period[count] <= self._since_probe[count]
            if count == self.current or not due:
                continue
            room = idle >= IDLE_SHARE * (count - self.current)
            if (count < self.current and short) or (count > self.current and room):
                self._probe, self._probe_left, self._probe_sizes = count, PROBE, set()
                self._use(count)
                return

    def _idle_cores(self) -> float:
        """Cores idle on average since the last look."""
        then, idle_then = self._idle_since
        now, idle_now = self._clock(), self._idle()
        self._idle_since = (now, idle_now)
        if idle_now is None or idle_then is None or now <= then:
            return float("inf")
        return (idle_now - idle_then) / (now - then)

    def _record(self, size: int, count: int, seconds: float) -> None:
        self._times.setdefault((size, count), deque(maxlen=KEPT)).append(seconds)
        for c in self.counts:
            self._since_probe[c] += 1
        if self._probe is None:
            self._until_look -= 1
            return
        self._probe_sizes.add(size)
        self._probe_left -= 1
        if self._probe_left <= 0:
            self._decide()

    def _decide(self) -> None:
        probe, self._probe = self._probe, None
        assert probe is not None
        self._since_probe[probe] = 0
        wins = losses = 0
        for size in self._probe_sizes:
            tried = list(self._times.get((size, probe), ()))[-PROBE:]
            kept = self._times.get((size, self.current))
            if len(tried) < 2 or not kept:
                continue
            if statistics.median(tried) < WIN * statistics.median(kept):
                wins += 1
            else:
                losses += 1
        if wins > losses:
            self._period[self.current] = FIRST_PERIOD
            self.current = probe
            self._shares.clear()
            for size in self._probe_sizes:  # older steps at this count are from another time's load
                self._times[(size, probe)] = deque(list(self._times[(size, probe)])[-PROBE:], maxlen=KEPT)
        else:
            self._period[probe] = min(2 * self._period[probe], MAX_PERIOD)
        self._use(self.current)
        self._until_look = FIRST_PERIOD


def idle_seconds() -> float | None:
    """CPU seconds the cores this process may run on have spent idle since boot (psutil), None if unknown."""
    try:
        import psutil

        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        times = psutil.cpu_times(percpu=True)
        chosen = [times[c] for c in cores if c < len(times)] if cores else times
        return float(sum(t.idle + getattr(t, "iowait", 0.0) for t in chosen))
    except (ImportError, OSError, AttributeError):
        return None
