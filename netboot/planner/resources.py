"""What the machine offers a run, measured: the memory budget and what the process already holds, the threads a
product runs on. The planner decides from these figures alone, so a plan can be made (and tested) for any
machine by writing them down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    memory_budget: int | None = None  # bytes of peak RSS the run may reach (--max-memory); None: no limit
    process_bytes: int = 0  # resident now: interpreter, libraries, kernels, tokenizer
    process_peak: int = 0  # the most the process held so far (loading kernels can pass the budget)
    threads: int = 1
    scratch_per_thread: int = 1 << 20  # a prompt product's dequantization scratch, per thread
    compiled: bool = False  # this process compiled the kernels (nothing was cached): that takes more memory

    @classmethod
    def measure(cls, memory_budget: int | None = None, compiled: bool = False) -> Resources:
        from netboot import memory
        from netboot.backends.cpu import kernels

        return cls(memory_budget, memory.rss(), memory.peak_rss(), kernels.thread_count(), kernels.CHUNK_ELEMS * 4,
                   compiled)
