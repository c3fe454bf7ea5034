"""The `Backend` contract, held for every backend this build has: each operation against a plain numpy / gguf-py
reference, token ids checked, and the fused one-token layer equal to the steps it fuses."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as reference_dequantize
from support.quantdata import random_blocks

from netboot.backends.base import select
from netboot.errors import NetbootError
from netboot.tensors.ggml import BLOCK_SIZES, GGMLType
from netboot.tensors.qtensor import QTensor

BACKENDS = ["cpu"]
TYPES = [GGMLType[name] for name in "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K".split()]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return select(request.param)


def dense(t: QTensor) -> np.ndarray:
    return reference_dequantize(t.data, gguf.GGMLQuantizationType[t.qtype.name]).reshape(t.shape).astype(np.float64)


def random_matrix(qtype: GGMLType, rows: int, blocks: int, seed: int) -> QTensor:
    cols = BLOCK_SIZES[qtype][0] * blocks if BLOCK_SIZES[qtype][0] > 1 else 32 * blocks
    raw = random_blocks(qtype, rows, cols, np.random.default_rng(seed))
    return QTensor.from_bytes("w", qtype, (rows, cols), raw)


@pytest.mark.parametrize("n", [1, 7], ids=["decode", "prompt"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_linear_on_every_type(backend, qtype, n):
    w = random_matrix(qtype, 19, 2, int(qtype) + n)
    x = np.random.default_rng(n).standard_normal((n, w.cols)).astype(np.float32)
    out = backend.linear(x, w)
    expected = x.astype(np.float64) @ dense(w).T
    assert out.shape == (n, w.rows) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_take_rows_reads_the_rows_asked_for(backend, qtype):
    w = random_matrix(qtype, 11, 1, int(qtype))
    ids = np.array([3, 0, 10, 3])
    np.testing.assert_array_equal(backend.take_rows(w, ids), dense(w)[ids].astype(np.float32))


@pytest.mark.parametrize("bad", [-1, 11, 1 << 40])
def test_take_rows_refuses_an_id_outside_the_table(backend, bad):
    w = random_matrix(GGMLType.Q8_0, 11, 1, 0)
    with pytest.raises(NetbootError, match=f"token id {bad} is outside w"):
        backend.take_rows(w, np.array([1, bad]))


def test_norm_rope_glu(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    scale = rng.standard_normal(8).astype(np.float32)
    w = QTensor.from_bytes("n", GGMLType.F32, (8,), scale.view(np.uint8))
    rms = np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(backend.norm(x, w, 1e-6), x / rms * scale, rtol=1e-5, atol=1e-6)

    angles, inv_freq = np.array([0.0, 1.0, 5.0]), 10000.0 ** (-np.arange(0, 8, 2) / 8)
    for halves in (False, True):
        theta = angles[:, None] * inv_freq[None, :]
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        a, b = (x[..., :4], x[..., 4:]) if halves else (x[..., 0::2], x[..., 1::2])
        ra, rb = a * c - b * s, a * s + b * c
        expected = np.concatenate([ra, rb], -1) if halves else np.stack([ra, rb], -1).reshape(x.shape)
        np.testing.assert_allclose(backend.rope(x, angles, inv_freq, halves), expected, rtol=1e-5, atol=1e-5)

    gate, up = rng.standard_normal((2, 16)).astype(np.float32), rng.standard_normal((2, 16)).astype(np.float32)
    g = gate.astype(np.float64)
    silu = g / (1 + np.exp(-g)) * up
    gelu = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3))) * up
    np.testing.assert_allclose(backend.glu(gate, up, "silu"), silu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.glu(gate, up, "gelu_tanh"), gelu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [None, 2])
def test_attend_is_causal_grouped_query_attention(backend, window):
    rng = np.random.default_rng(2)
    heads, kv_heads, d, s = 4, 2, 8, 5
    positions = np.array([3, 4])
    q = rng.standard_normal((2, heads, d)).astype(np.float32)
    keys = rng.standard_normal((kv_heads, s, d)).astype(np.float32)
    values = rng.standard_normal((kv_heads, s, d)).astype(np.float32)
    out = backend.attend(q, keys, values, positions, window, 0.3)
    expected = np.zeros((2, heads, d))
    for t, p in enumerate(positions):
        for h in range(heads):
            kv = h // (heads // kv_heads)
            seen = [j for j in range(s) if j <= p and (window is None or p - j < window)]
            scores = np.array([0.3 * q[t, h] @ keys[kv, j] for j in seen], dtype=np.float64)
            probs = np.exp(scores - scores.max())
            expected[t, h] = (probs / probs.sum()) @ values[kv, seen]
    np.testing.assert_allclose(out, expected.reshape(2, heads * d), rtol=1e-5, atol=1e-5)
