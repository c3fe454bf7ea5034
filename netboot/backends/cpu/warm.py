"""Load (or, the first time, compile) every kernel before the first token."""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np

from netboot import memory
from netboot.backends.cpu import blocks
from netboot.backends.cpu.kernels import dequantize_rows, matvec, readonly, use_batched
from netboot.tensors.ggml import GGMLType


def warm(decode_layer: bool = True, batched: bool = True) -> bool:
    """Load (or, the first time, compile) every kernel now rather than inside the first token's forward pass:
    each with the array types the model passes it; the one-call decode layer (`fused`) if `decode_layer`, the
    kernels of batched steps (a serving engine) if `batched` (else they stay unused: `kernels.use_batched`).
    Then LLVM's code goes back to the kernel (`netboot.memory`): nothing compiles again. Returns whether anything
    had to be compiled (no cached machine code).

    One process at a time: two compiling into an empty cache at once (`netboot api` and `netboot chat` started
    together on a fresh install) left a cache whose decode layer crashed on loading; the second now waits and
    loads what the first compiled."""
    from netboot.backends.cpu.jit import kernel_cache_dir

    directory = Path(kernel_cache_dir())
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock, memory.paused_gc():
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _warm(decode_layer, batched)


def _warm(decode_layer: bool, batched: bool) -> bool:
    from netboot.backends.cpu import fused, jit, ops

    kernels = [blocks.matvec, blocks.dequantize_rows, ops.rms_norm, ops.rope, ops.gelu_tanh_mul, ops.silu_mul,
               ops.attend_one]
    row = np.zeros((32, 34), np.uint8)
    if decode_layer:  # a one-token layer of a 32-wide toy model; it holds the matrix-vector products
        ones, cache = np.ones(32, np.float32), np.zeros((1, 2, 32), np.float32)
        shape = fused.LayerShape((1, 1, 32), (True, True, True, True), 1e-6, 1.0)
        fused.run_layer(shape, np.ones((1, 32), np.float32), [(row, GGMLType.Q8_0)] * len(fused.PRODUCTS),
                        [ones] * len(fused.NORMS), cache, cache.copy(), 0, 0, 0.0, np.ones(16))
        memory.release_library_code(jit.LLVM_LIBRARY)  # the largest load: released before the next adds to it
        kernels.append(fused._layer)
    # What prompts and the output projection call from Python.
    matvec(row, GGMLType.Q8_0, np.zeros((1, 32), dtype=np.float32))
    memory.release_library_code(jit.LLVM_LIBRARY)
    use_batched(batched)
    if batched:  # a step of several sequences
        kernels += [blocks.matvec_many, blocks.matvec_fixed]
        matvec(row, GGMLType.Q8_0, np.zeros((2, 32), dtype=np.float32))
        matvec(np.zeros((2, 18), np.uint8), GGMLType.Q4_0, np.zeros((2, 32), dtype=np.float32))
        memory.release_library_code(jit.LLVM_LIBRARY)
    dequantize_rows(row, GGMLType.Q8_0, 32)
    h2, h3, w = np.ones((1, 4), np.float32), np.ones((1, 1, 4), np.float32), np.ones(4, np.float32)
    ops.rms_norm(h2, w, 1e-6)
    ops.rms_norm(h3, w, 1e-6)
    ops.rope(h3, np.zeros(1), readonly(np.ones(2)), True)  # frequencies: a read-only cached table
    kv = np.ones((1, 2, 4), np.float32)
    # One-token attention outside the fused layer (batched or streamed steps).
    ops.attend_one(np.ones((1, 4), np.float32), kv, kv, 0, 1, np.float32(1.0))
    ops.gelu_tanh_mul(h2, h2)
    ops.silu_mul(h2, h2)
    memory.release_library_code(jit.LLVM_LIBRARY)
    return any(sum(k.stats.cache_misses.values()) for k in kernels)
