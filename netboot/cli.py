"""The `netboot` command. stdout carries only generated text (or a command's report); everything else goes to
stderr. Each subcommand lives in `netboot.commands.<name>`; this module sets the thread counts (before numpy and
numba load) and turns every `NetbootError` into one line and exit status 1."""

from __future__ import annotations

import os
import sys

from netboot.commands import build_parser, fail


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "threads"):
        if args.threads is None:
            args.threads = available_cores()
        if args.threads < 1:
            return fail("--threads must be at least 1")
        # Must be set before numpy and numba load. BLAS gets one thread: netboot runs its products on its own
        # threads (see netboot.backends.cpu.kernels), and idle BLAS threads spinning would take the cores from them.
        os.environ["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    from netboot.errors import NetbootError

    try:
        return args.handler(args)
    except NetbootError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (OSError, MemoryError) as e:
        return fail(str(e))
