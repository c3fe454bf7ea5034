"""netboot.backends.cpu.dequant.dequantize against gguf's reference dequantization, and the products built on it."""

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as reference_dequantize
from support.quantdata import float_bytes, random_blocks

from netboot.backends.cpu import dequant as quant
from netboot.backends.cpu import linear
from netboot.backends.cpu.backend import CpuBackend
from netboot.errors import UnsupportedError
from netboot.tensors.ggml import BLOCK_SIZES, GGMLType, row_bytes
from netboot.tensors.qtensor import QTensor

TYPES = [GGMLType[name] for name in "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K".split()]
QUANTIZED = [t for t in TYPES if BLOCK_SIZES[t][0] > 1]
FLOATS = [t for t in TYPES if t not in QUANTIZED]


def n_cols(qtype: GGMLType, n_blocks: int) -> int:
    """A row of `n_blocks` blocks; float types get an odd number of elements per block instead."""
    elems = BLOCK_SIZES[qtype][0]
    return n_blocks * (elems if elems > 1 else 37)


def reference(raw: np.ndarray, qtype: GGMLType, cols: int) -> np.ndarray:
    out = reference_dequantize(raw, gguf.GGMLQuantizationType[qtype.name])
    return np.asarray(out, dtype=np.float32).reshape(-1, cols)


def test_every_supported_type_is_tested():
    assert set(TYPES) == set(BLOCK_SIZES) == quant.DEQUANTIZABLE_TYPES


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows, n_blocks", [(7, 3), (1, 1), (2, 5)])
def test_matches_gguf_reference(qtype, rows, n_blocks):
    rng = np.random.default_rng([int(qtype), rows, n_blocks])
    cols = n_cols(qtype, n_blocks)
    raw = random_blocks(qtype, rows, cols, rng)
    assert raw.shape == (rows, row_bytes(qtype, cols)) and raw.dtype == np.uint8
    before = raw.copy()

    out = quant.dequantize(raw, qtype, cols)

    assert out.dtype == np.float32 and out.shape == (rows, cols)
    assert np.isfinite(out).all()
    expected = reference(raw, qtype, cols)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(raw, before)
    # Not a degenerate tensor: values of about the requested scale, not all equal.
    assert 0.005 < out.std() < 0.08


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_arbitrary_bytes_match_gguf_reference(qtype):
    """Every bit pattern, including fp16 scales that are NaN, Inf or subnormal."""
    rng = np.random.default_rng(int(qtype))
    cols = n_cols(qtype, 4)
    raw = rng.integers(0, 256, (50, row_bytes(qtype, cols)), dtype=np.uint8)
    with np.errstate(all="ignore"):
        out = quant.dequantize(raw, qtype, cols)
        expected = reference(raw, qtype, cols)
    np.testing.assert_array_equal(out, expected)  # NaNs compare equal position by position


@pytest.mark.parametrize("qtype", FLOATS, ids=lambda t: t.name)
def test_float_types_round_trip(qtype):
    values = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32)
    out = quant.dequantize(float_bytes(values, qtype), qtype, 9)
    rtol = {GGMLType.F32: 0, GGMLType.F16: 1e-3, GGMLType.BF16: 4e-3}[qtype]
    np.testing.assert_allclose(out, values, rtol=rtol, atol=0)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_one_dimensional_input_is_one_row(qtype):
    rng = np.random.default_rng(11)
    cols = n_cols(qtype, 2)
    raw = random_blocks(qtype, 1, cols, rng)
    out = quant.dequantize(raw.reshape(-1), qtype, cols)
    assert out.shape == (1, cols)
    np.testing.assert_array_equal(out, reference(raw, qtype, cols))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_read_only_unaligned_memmap(qtype, tmp_path):
    rng = np.random.default_rng(5)
    cols = n_cols(qtype, 3)
    raw = random_blocks(qtype, 5, cols, rng)
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x01" + raw.tobytes())  # one byte ahead: every multi-byte field is misaligned
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    view = mm[1:].reshape(raw.shape)
    assert not view.flags.writeable

    out = quant.dequantize(view[1:4], qtype, cols)

    np.testing.assert_array_equal(out, reference(raw[1:4], qtype, cols))
    assert out.flags.writeable and not np.shares_memory(out, mm)
    out[...] = 0  # the result is the caller's own
    np.testing.assert_array_equal(quant.dequantize(view[1:4], qtype, cols), reference(raw[1:4], qtype, cols))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_zero_rows(qtype):
    cols = n_cols(qtype, 2)
    out = quant.dequantize(np.zeros((0, row_bytes(qtype, cols)), dtype=np.uint8), qtype, cols)
    assert out.shape == (0, cols) and out.dtype == np.float32


def test_q8_0_layout_by_hand():
    block = np.zeros(34, dtype=np.uint8)
    block[0:2] = np.array([0.5], dtype="<f2").view(np.uint8)
    block[2:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    out = quant.dequantize(block, GGMLType.Q8_0, 32)
    np.testing.assert_array_equal(out[0], np.arange(-16, 16) * 0.5)


def test_q4_0_and_q5_0_nibble_order_by_hand():
    # Byte j holds element j in its low nibble and element j + 16 in its high nibble.
    qs = (np.arange(16) | (15 - np.arange(16)) << 4).astype(np.uint8)
    d = np.array([2.0], dtype="<f2").view(np.uint8)
    low, high = np.arange(16), 15 - np.arange(16)
    q4 = quant.dequantize(np.concatenate([d, qs]), GGMLType.Q4_0, 32)[0]
    np.testing.assert_array_equal(q4, 2.0 * (np.concatenate([low, high]) - 8))
    # Q5_0: bit j of the little-endian uint32 qh is the fifth bit of element j; set it for elements 1 and 17.
    qh = np.array([(1 << 1) | (1 << 17)], dtype="<u4").view(np.uint8)
    q5 = quant.dequantize(np.concatenate([d, qh, qs]), GGMLType.Q5_0, 32)[0]
    q = np.concatenate([low, high])
    q[[1, 17]] += 16
    np.testing.assert_array_equal(q5, 2.0 * (q - 16))


def test_wrong_row_bytes_is_rejected():
    raw = np.zeros((2, 35), dtype=np.uint8)
    with pytest.raises(ValueError, match="Q8_0"):
        quant.dequantize(raw, GGMLType.Q8_0, 32)
    with pytest.raises(ValueError):
        quant.dequantize(np.zeros((2, 34), dtype=np.uint8), GGMLType.Q8_0, 33)  # not whole blocks


@pytest.mark.parametrize(
    "qtype, name",
    [(GGMLType.Q2_K, "Q2_K"), (GGMLType.Q8_1, "Q8_1"), (GGMLType.Q8_K, "Q8_K"), (16, "IQ2_XXS"), (99, "type 99")],
)
def test_unsupported_type_raises_naming_it(qtype, name):
    with pytest.raises(UnsupportedError, match=name):
        quant.dequantize(np.zeros((1, 64), dtype=np.uint8), qtype, 256)


# ---- products on QTensor ----


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_single_vector_and_single_row(qtype):
    rng = np.random.default_rng(int(qtype) + 200)
    cols = n_cols(qtype, 1)
    raw = random_blocks(qtype, 1, cols, rng)
    w = QTensor.from_bytes("w", qtype, (1, cols), raw)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    np.testing.assert_allclose(linear.matmul(x, w), x @ reference(raw, qtype, cols).T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_take_rows_and_dequantize(qtype):
    rng = np.random.default_rng(int(qtype) + 300)
    rows, cols = 10, n_cols(qtype, 2)
    raw = random_blocks(qtype, rows, cols, rng)
    dense = reference(raw, qtype, cols)
    w = QTensor.from_bytes("emb", qtype, (rows, cols), raw)

    ids = np.array([4, 0, 9, 4])
    backend = CpuBackend()
    np.testing.assert_array_equal(backend.take_rows(w, ids), dense[ids])
    np.testing.assert_array_equal(backend.take_rows(w, np.array([], dtype=np.int64)), dense[:0])
    np.testing.assert_array_equal(quant.dequantize_tensor(w), dense)

    w3 = QTensor.from_bytes("w3", qtype, (2, 5, cols), raw)
    np.testing.assert_array_equal(quant.dequantize_tensor(w3), dense.reshape(2, 5, cols))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_vector(qtype):
    cols = n_cols(qtype, 2)
    raw = random_blocks(qtype, 1, cols, np.random.default_rng(7))
    v = linear.vector(QTensor.from_bytes("norm", qtype, (cols,), raw.reshape(-1)))
    assert v.shape == (cols,)
    np.testing.assert_array_equal(v, reference(raw, qtype, cols)[0])
