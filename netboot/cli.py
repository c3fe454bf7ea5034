"""The `netboot` command. stdout carries only generated text (or a command's report); everything else goes to
stderr. Each subcommand lives in `netboot.commands.<name>`; this module checks --threads and sets the thread counts
(before numpy and numba load), runs the command's `check` of its other flags (before anything loads), and turns every
`NetbootError` into one line and exit status 1."""

from __future__ import annotations

import argparse
import os
import sys

from netboot.commands import Limit, build_parser, fail
from netboot.errors import NetbootError


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


THREADS_PER_CORE = 4  # more only oversubscribes, and OpenMP fails (or crashes) creating tens of thousands


def thread_limit() -> Limit:
    cores = os.cpu_count() or 1
    return Limit("--threads", 1, THREADS_PER_CORE * cores,
                 why=f"at most {THREADS_PER_CORE} per core, and this machine has {cores}")


def set_threads(args: argparse.Namespace) -> None:
    """Check --threads and hand it to numba and OpenMP: before numpy and numba load."""
    # Without --threads the count adapts to the machine's load as the model runs (netboot.backends.cpu.threads).
    os.environ["NETBOOT_THREADS_FIXED"] = "0" if args.threads is None else "1"
    if args.threads is None:
        args.threads = available_cores()
    thread_limit().check(args.threads)
    # BLAS gets one thread: netboot runs its products on its own threads (see netboot.backends.cpu.kernels), and
    # idle BLAS threads spinning would take the cores from them.
    os.environ["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "threads"):
            set_threads(args)
        if hasattr(args, "check"):
            args.check(args)
        return args.handler(args)
    except NetbootError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError as e:
        return fail(f"out of memory{': ' + str(e) if str(e) else ''} (a smaller model, or --max-memory, may fit)")
    except OSError as e:
        return fail(str(e) or type(e).__name__)
