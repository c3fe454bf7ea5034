"""The process's own memory: what is resident now and at peak, and giving back the pages of code it no longer
needs.

LLVM (libllvmlite, which numba loads) leaves about 65 MB of its machine code resident after numba has loaded the
cached kernels, though nothing runs it again until something new is compiled. Those pages are clean copies of the
library file, so the kernel can drop them at once (MADV_PAGEOUT) and read them back if they are ever needed:
with the default model that is a sixth of the process's peak.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

MADV_PAGEOUT = 21  # Linux 5.4+; older kernels answer EINVAL and nothing changes


def rss() -> int:
    """Resident bytes now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def peak_rss() -> int:
    """The most bytes this process has had resident."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_library_code(name: str) -> int:
    """Ask the kernel to drop the resident pages of every read-only mapping of the shared library whose file name
    is `name`; returns the bytes of the mappings advised (0 where this is not possible)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError:
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    for line in lines:
        parts = line.split()
        # Writable mappings hold relocated data that is no longer a copy of the file: leave those.
        if len(parts) < 6 or os.path.basename(parts[5]) != name or "w" in parts[1]:
            continue
        start, end = (int(v, 16) for v in parts[0].split("-"))
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised
