"""The thread tuner: on steps whose time depends on the thread count in use, it settles on the fastest count,
follows a change of load, and probes rarely once settled. A machine is simulated by a clock that each step
advances by that count's cost; `kernels.step` on the real kernels is exercised by the engine tests."""

from __future__ import annotations

from collections.abc import Callable

from netboot.backends.cpu.threads import MAX_PERIOD, ThreadTuner, candidates


class Machine:
    """A clock and a thread count; a step takes cost(count, step number) seconds, during which the process gets
    share(count, step number) cores (default: all it asks for) and idle(count, step number) cores stay idle (None:
    the machine cannot tell)."""

    def __init__(self, most: int, cost: Callable[[int, int], float],
                 idle: Callable[[int, int], float] | None = None, share: Callable[[int, int], float] | None = None):
        self.now, self.count, self.cost, self.steps, self.idle, self.cpu = 0.0, most, cost, 0, 0.0, 0.0
        self.idle_rate, self.share = idle, share or (lambda n, _: float(n))
        self.counts: list[int] = []
        self.tuner = ThreadTuner(most, self.use, clock=lambda: self.now, cpu=lambda: self.cpu,
                                 idle=lambda: None if idle is None else self.idle)

    def use(self, n: int) -> None:
        self.count = n

    def run(self, steps: int, size: int = 1) -> None:
        for _ in range(steps):
            with self.tuner.step(size):
                took = self.cost(self.count, self.steps)
                self.now += took
                self.cpu += took * self.share(self.count, self.steps)
                if self.idle_rate is not None:
                    self.idle += took * self.idle_rate(self.count, self.steps)
            self.counts.append(self.count)
            self.steps += 1


def test_candidates_halve_down_to_one():
    assert candidates(1) == [1]
    assert candidates(2) == [2, 1]
    assert candidates(8) == [8, 4, 2, 1]
    assert candidates(6) == [6, 3, 1]


def busy_core(n: int, _: int) -> float:
    return 0.006 if n == 1 else 0.030  # two threads collapse on a shared core


def short_of_cores(n: int, _: int) -> float:
    return 1.4 if n == 2 else 1.0  # measured: 1.47 CPU seconds per second of two threads with one core taken


def test_a_busy_core_makes_it_drop_to_one_thread():
    m = Machine(2, busy_core, idle=lambda n, _: 0.0, share=short_of_cores)
    m.run(200)
    assert m.tuner.current == 1
    assert m.counts[:8].count(2) <= 4 + 1  # the first look, after 4 steps, probes one thread and keeps it
    assert m.counts[8:].count(2) == 0  # no core idle: two threads are never tried again


def test_an_idle_machine_never_slows_itself_with_probes():
    m = Machine(2, lambda n, _: 0.010 if n == 2 else 0.017, idle=lambda n, _: 2.0 - n)
    m.run(2000)
    assert set(m.counts) == {2}  # its threads get their cores: fewer cannot be faster, nothing to try


def test_without_a_cpu_signal_probes_come_less_and_less_often():
    # The process gets its cores yet one thread is faster (memory-bound?): only probes find it; the probes of
    # the losing count space out.
    m = Machine(2, lambda n, _: 0.010 if n == 1 else 0.017, idle=lambda n, _: 2.0 - n)
    m.run(4000)
    assert m.tuner.current == 2  # nothing tells it to look: no count was short of cores
    m = Machine(2, lambda n, _: 0.010 if n == 1 else 0.017, share=short_of_cores)
    m.run(4000)
    assert m.tuner.current == 1
    late = m.counts[-2000:].count(2)
    assert late <= 3 * (2000 // MAX_PERIOD + 1)  # one probe of 3 steps per MAX_PERIOD at most


def test_it_follows_the_load_when_another_process_starts_and_stops():
    def busy(step: int) -> bool:
        return 1000 <= step < 2500

    def cost(n: int, step: int) -> float:
        return busy_core(n, step) if busy(step) else (0.017 if n == 1 else 0.010)

    def idle(n: int, step: int) -> float:
        return 0.0 if busy(step) else 2.0 - n

    def share(n: int, step: int) -> float:
        return short_of_cores(n, step) if busy(step) else float(n)

    m = Machine(2, cost, idle, share)
    m.run(1000)
    assert m.tuner.current == 2 and set(m.counts) == {2}
    m.run(100)  # the other process started at step 1000
    assert m.tuner.current == 1
    assert m.counts[1000:1100].count(2) <= 30  # noticed at the next look
    m.run(1500)  # it stopped at step 2500: idle cores, a probe of two threads, kept
    assert m.tuner.current == 2
    assert m.counts[2500:2600].count(1) <= 30


def test_probes_compare_steps_of_the_same_size():
    # Steps of 8 tokens cost 8x a step of one; alternating sizes must not read as one count being slower.
    m = Machine(2, lambda n, step: (0.010 if n == 2 else 0.017) * (8 if step % 2 else 1), share=short_of_cores)
    for _ in range(300):
        m.run(1, size=1)
        m.run(1, size=8)
    assert m.tuner.current == 2


def test_one_core_means_nothing_to_tune():
    m = Machine(1, lambda n, _: 0.01)
    m.run(100)
    assert set(m.counts) == {1}
