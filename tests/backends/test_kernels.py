"""The compiled kernels against the plain reference: gguf-py's dequantization, then a float64 matrix product.

Every tensor type, random blocks, odd sizes: row counts that no thread count divides evenly, an odd number of
blocks per row, odd row lengths for the unquantized types (whose "block" is one element), 1 to MATVEC_MAX vectors
for the direct kernel and more for the dequantize-and-BLAS path, with chunks and thread slabs that do not divide
the rows evenly either.
"""

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as reference_dequantize
from support.quantdata import random_blocks

from netboot.backends.cpu import kernels, linear
from netboot.tensors.ggml import BLOCK_SIZES, SUPPORTED_TYPES, GGMLType
from netboot.tensors.qtensor import QTensor

TYPES = sorted(SUPPORTED_TYPES)


def odd_cols(qtype: GGMLType, n_blocks: int = 3) -> int:
    elems = BLOCK_SIZES[qtype][0]
    return n_blocks * (elems if elems > 1 else 37)


def reference_product(raw: np.ndarray, qtype: GGMLType, cols: int, x: np.ndarray) -> np.ndarray:
    dense = np.asarray(reference_dequantize(raw, gguf.GGMLQuantizationType[qtype.name]), dtype=np.float64)
    return x.astype(np.float64) @ dense.reshape(-1, cols).T


def assert_close(out: np.ndarray, expected: np.ndarray) -> None:
    # float32 accumulation in another order than the float64 reference: relative to the size of the terms.
    scale = np.abs(expected).max()
    assert np.abs(out - expected).max() <= 2e-5 * scale, np.abs(out - expected).max() / scale


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", range(1, linear.MATVEC_MAX + 1))
def test_matvec_matches_reference(qtype, n):
    rng = np.random.default_rng([int(qtype), n])
    rows, cols = 37, odd_cols(qtype)
    raw = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n, cols)).astype(np.float32)

    out = kernels.matvec(raw, qtype, x)

    assert out.shape == (n, rows) and out.dtype == np.float32
    assert_close(out, reference_product(raw, qtype, cols, x))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_matches_reference(qtype, monkeypatch):
    rng = np.random.default_rng(int(qtype) + 1000)
    rows, cols, n = 53, odd_cols(qtype), linear.MATVEC_MAX + 3
    raw = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    monkeypatch.setattr(kernels, "CHUNK_ELEMS", cols * 5)  # chunks of 5 rows, in slabs of 27 and 26 rows
    chunks = []
    real = kernels.dequantize_rows

    def spy(data, *args):
        chunks.append(data.shape[0])
        return real(data, *args)

    monkeypatch.setattr(kernels, "dequantize_rows", spy)

    out = linear.matmul(x, QTensor.from_bytes("w", qtype, (rows, cols), raw))

    assert out.shape == (n, rows) and out.dtype == np.float32
    assert_close(out, reference_product(raw, qtype, cols, x))
    # Every row dequantized exactly once, never more than a chunk's worth at a time.
    assert sum(chunks) == rows and max(chunks) == 5


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_dequantize_rows_is_bit_exact(qtype):
    rng = np.random.default_rng(int(qtype) + 2000)
    rows, cols = 11, odd_cols(qtype)
    raw = random_blocks(qtype, rows, cols, rng)
    expected = reference_dequantize(raw, gguf.GGMLQuantizationType[qtype.name]).reshape(rows, cols)
    np.testing.assert_array_equal(kernels.dequantize_rows(raw, qtype, cols), expected)


@pytest.mark.parametrize("qtype", [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.F16], ids=lambda t: t.name)
def test_same_result_on_one_thread_and_all(qtype):
    rng = np.random.default_rng(int(qtype) + 3000)
    rows, cols = 101, odd_cols(qtype, 2)
    raw = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    many = kernels.matvec(raw, qtype, x)
    before = kernels.set_threads(1)
    try:
        one = kernels.matvec(raw, qtype, x)
    finally:
        kernels.set_threads(before)
    # Each row is one thread's work either way, so the sums are the same sums.
    np.testing.assert_array_equal(one, many)


def test_set_threads_is_bounded_by_the_pool():
    import numba

    before = numba.get_num_threads()
    try:
        assert kernels.set_threads(0) == 1
        assert kernels.set_threads(10_000) == numba.config.NUMBA_NUM_THREADS
    finally:
        kernels.set_threads(before)


def test_real_model_output_projection(default_model):
    """The hot path: a slice of Gemma 3's Q8_0 token table (the tied output projection) against gguf-py."""
    table = default_model.model.weights.output()
    assert table.qtype == GGMLType.Q8_0
    rows = table.data[1000:1999]  # 999 rows: not a multiple of the thread count
    x = np.random.default_rng(5).standard_normal((1, table.cols)).astype(np.float32)
    assert_close(kernels.matvec(rows, table.qtype, x), reference_product(rows, table.qtype, table.cols, x))


NO_COMPILE_AFTER_LOAD = """
import json, re, sys
import netboot
from netboot import memory
from netboot.backends.cpu import blocks, ops
from netboot.backends.cpu import fused as decode

def signatures():
    return {f"{m.__name__}.{k}": [str(s) for s in v.signatures]
            for m in (blocks, decode, ops) for k, v in vars(m).items() if hasattr(v, "signatures")}

def llvm_resident():
    total, name = 0, ""
    with open("/proc/self/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                name = line.split()[-1]
            elif line.startswith("Rss:") and name.endswith("libllvmlite.so"):
                total += int(line.split()[1]) * 1024
    return total

loaded = netboot.load(sys.argv[1], max_memory=int(sys.argv[2]) or None, positions=64)
after_load = signatures(), llvm_resident()
model = loaded.model
cache = model.new_cache()
logits = model.forward(list(range(2, 40)), cache, 0)
for pos in range(38, 41):
    logits = model.forward([int(logits.argmax())], cache, pos)
print(json.dumps({"load": after_load, "run": (signatures(), llvm_resident())}))
"""


@pytest.mark.parametrize("max_memory", [0, 200_000_000], ids=["resident", "streamed"])
def test_a_forward_pass_compiles_nothing_after_load(default_model_path, max_memory):
    """`warm` loads every kernel with the exact argument types the model passes, then gives LLVM's code
    pages back; a kernel compiled or loaded later would fault them in again (10 MB and a prefill 30% slower,
    found that way). Streamed, the weights are views of read buffers and one-token steps take the prompt path."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", NO_COMPILE_AFTER_LOAD, str(default_model_path), str(max_memory)],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (sigs_load, llvm_load), (sigs_run, llvm_run) = result["load"], result["run"]
    assert sigs_run == sigs_load
    assert llvm_load < 16 << 20, llvm_load  # of about 65 MB resident before the release
    assert llvm_run <= llvm_load + (1 << 20), (llvm_load, llvm_run)


def test_exp32_and_the_gated_activations_against_float64():
    """`ops.exp32` (the vectorizable exp of the activations and of attention's softmax) over float32's whole normal
    range, and GeGLU / SwiGLU built on it, against numpy's float64."""
    import math

    from numba import njit

    from netboot.backends.cpu import ops

    @njit
    def exp_all(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = ops.exp32(x[i])
        return out

    x = np.linspace(-87, 88, 100_001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(exp_all(x) - exact) / exact) < 5e-7
    np.testing.assert_allclose(exp_all(np.array([-1000, 1000], np.float32)), np.exp([-87.0, 88.0]), rtol=5e-7)

    rng = np.random.default_rng(7)
    gate = (rng.standard_normal((3, 999)) * 4).astype(np.float32)
    up = rng.standard_normal((3, 999)).astype(np.float32)
    g, u = gate.astype(np.float64), up.astype(np.float64)
    gelu = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3))) * u
    silu = g / (1 + np.exp(-g)) * u
    for ours, exact in ((ops.gelu_tanh_mul(gate, up), gelu), (ops.silu_mul(gate, up), silu)):
        assert ours.shape == gate.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, exact, rtol=2e-6, atol=1e-6)


def test_f16_dot_without_the_cpus_conversion():
    """On CPUs that convert fp16 themselves (`simd.NATIVE_HALF`) F16 rows take `blocks.dot_f16_native`; the others
    take `blocks.dot_f16_converted`, checked here whichever this machine uses."""
    from netboot.backends.cpu import blocks

    rng = np.random.default_rng(11)
    rows, cols = 9, odd_cols(GGMLType.F16)
    raw = random_blocks(GGMLType.F16, rows, cols, rng)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    out = np.array([[blocks.dot_f16_converted(raw[r], x[0], x, kernels.FP16, kernels.N16) for r in range(rows)]])
    assert_close(out, reference_product(raw, GGMLType.F16, cols, x))
