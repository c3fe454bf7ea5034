"""Where numba keeps netboot's compiled kernels: NETBOOT_CACHE/kernels/<numba version>-<hash of the sources>.

Imported by each module that compiles (`blocks`, `simd`, `ops`, `fused`) before its functions are decorated.
numba checks a cached function against its own source file only, so a kernel in `blocks` that inlines code from
`simd` would survive an edit of `simd`; keying the directory by the content of every source file of this package
(whatever their names: a file added or moved here counts too) makes any edit start afresh. It also keeps the
cache out of the installed package, which may be read-only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba

from netboot import memory
from netboot.paths import cache_dir

LLVM_LIBRARY = "libllvmlite.so"


def kernel_cache_dir() -> Path:
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return cache_dir() / "kernels" / f"numba-{numba.__version__}-{digest.hexdigest()[:16]}"


# numba reads this when a cache=True function is defined. Code of other packages compiled later in this process
# caches here too, under its own file names.
numba.config.CACHE_DIR = str(kernel_cache_dir())
# Importing numba leaves 36 MB of LLVM's code resident that nothing runs until a kernel loads: give it back now, so
# that the peak while loading is the import or one kernel's load, not both (netboot.memory).
memory.release_library_code(LLVM_LIBRARY)
