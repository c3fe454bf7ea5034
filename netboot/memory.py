"""The process's own memory: what is resident now and at peak, and giving back the pages of code it no longer
needs.

LLVM (libllvmlite, which numba loads) leaves about 65 MB of its machine code resident after numba has loaded the
cached kernels, though nothing runs it again until something new is compiled. Those pages are clean copies of the
library file, so they can leave this process's memory and come back from the file if they are ever needed: with
the default model that is a sixth of the process's peak. A mapping that holds only file pages (no page written
since it was mapped: the code) is unmapped page by page (MADV_DONTNEED: for a read-only private mapping the next
access reads the file again, and the pages stay in the page cache for other processes); one that holds written
pages too (relocated data) is only offered back (MADV_PAGEOUT, which leaves written pages alone, and pages other
processes map as well).
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

MADV_DONTNEED = 4
MADV_PAGEOUT = 21  # Linux 5.4+; older kernels answer EINVAL and nothing changes


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block: loading kernels and a tokenizer makes some 10^6 objects that
    are all kept, and the collections they trigger (each rescanning numba's own objects) cost a tenth of the load
    time. Reference counting still frees the rest; collection resumes (when it was on) after the block."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def trim_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere). Parsing a header and
    building a tokenizer free many megabytes of numpy temporaries that glibc keeps for reuse (its threshold for
    giving large blocks their own mappings rises after the first ones are freed): 5-8 MB of RSS that a
    `--max-memory` budget would otherwise count as held."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss() -> int:
    """Resident bytes now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def peak_rss() -> int:
    """The most bytes this process has had resident.

    On Linux this is VmHWM, the high-water mark of this process's own memory: getrusage's ru_maxrss is not, as a
    child started by fork (or vfork) and exec inherits the parent's mark (a child of a 2 GB parent reports 2 GB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def evict_from_page_cache(path: str | os.PathLike) -> None:
    """Ask the kernel to drop a file's pages from the page cache (those no process maps stay).

    Why, for a shared library about to be loaded: a page fault on a file mapping also maps the neighbouring pages
    that are in the page cache (fault-around, 64 KB), so loading a library that sits whole in the page cache (just
    installed, or read by another process) makes far more of it resident: numba's import costs 93 MB of
    libllvmlite.so that way against 36 MB when it is read from disk as touched."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):
        pass
    finally:
        os.close(fd)


def lean_start() -> None:
    """Before numba loads, under a memory budget: llvmlite's library leaves the page cache, so that loading it maps
    what is touched rather than all that fault-around finds cached (see `evict_from_page_cache`). Costs reading
    about 40 MB from disk at start."""
    if "numba" in sys.modules:
        return
    library = llvm_library()
    if library is not None:
        evict_from_page_cache(library)


def llvm_library() -> str | None:
    """The path of llvmlite's shared library, found without loading it."""
    import glob
    import importlib.util

    spec = importlib.util.find_spec("llvmlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, "binding", "libllvmlite*")))
        if found:
            return found[0]
    return None


def release_library_code(name: str) -> int:
    """Drop this process's resident pages of every read-only mapping of the shared library whose file name is
    `name` (see the module's docstring for how it stays safe); returns the bytes of the mappings advised (0 where
    this is not possible)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/smaps") as f:
            text = f.read()
    except OSError:
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    for start, end, perms, anonymous in _mappings(text, name):
        # Writable mappings hold data that is no longer a copy of the file: leave those.
        if "w" in perms:
            continue
        advice = MADV_DONTNEED if anonymous == 0 and perms[3] == "p" else MADV_PAGEOUT
        if madvise(start, end - start, advice) == 0:
            advised += end - start
    return advised


def _mappings(smaps: str, name: str):
    """(start, end, perms, anonymous kB) of each mapping in /proc/self/smaps of a file named `name`: only their
    own lines are split (the whole text is some 2,000 mappings)."""
    tail = "/" + name + "\n"
    at = smaps.find(tail)
    while at >= 0:
        line_start = smaps.rfind("\n", 0, at) + 1
        line_end = at + len(tail)
        head = smaps[line_start : line_end - 1].split(None, 5)
        stats_end = smaps.find("\nVmFlags:", line_end)
        stats = smaps[line_end : stats_end if stats_end >= 0 else len(smaps)]
        anonymous = re.search(r"^Anonymous:\s+(\d+)", stats, re.M)
        if len(head) == 6 and "-" in head[0]:
            start, end = (int(v, 16) for v in head[0].split("-"))
            yield start, end, head[1], int(anonymous[1]) if anonymous else None
        at = smaps.find(tail, line_end)
