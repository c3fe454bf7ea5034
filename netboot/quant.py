"""Dequantization of GGML tensor bytes to float32, vectorized over blocks with numpy.

`dequantize` takes the bytes of whole rows, shape (rows, row_bytes), and views them as
(rows, blocks per row, bytes per block); each type's function below decodes that array of blocks
at once, never looping over blocks in Python. All multi-byte fields are little-endian, as in GGUF.
The arithmetic is done in float32 in the order ggml's reference code uses, so results are bit-for-bit
those of ggml's own dequantization.

Block layouts (fp16 = IEEE half; a "nibble" is 4 bits, low nibble first):

    Q4_0  d:fp16, qs[16]                    x = d * (q - 8)      q = 4 bits
    Q4_1  d:fp16, m:fp16, qs[16]            x = d * q + m        q = 4 bits
    Q5_0  d:fp16, qh[4], qs[16]             x = d * (q - 16)     q = 4 bits | 1 high bit from qh
    Q5_1  d:fp16, m:fp16, qh[4], qs[16]     x = d * q + m
    Q8_0  d:fp16, qs:int8[32]               x = d * q
    Q4_K  d:fp16, dmin:fp16, scales[12], qs[128]            super-block of 256 = 8 sub-blocks of 32,
    Q5_K  d:fp16, dmin:fp16, scales[12], qh[32], qs[128]    x = (d * sc) * q - (dmin * m), 6-bit sc and m
    Q6_K  ql[128], qh[64], scales:int8[16], d:fp16          16 sub-blocks of 16, x = (d * sc) * (q - 32)

In the 32-element blocks the low nibbles of qs[0:16] are elements 0-15 and the high nibbles elements 16-31.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from netboot.errors import UnsupportedError
from netboot.ggml import BLOCK_SIZES, GGMLType, row_bytes, type_name

_FP16 = np.dtype("<f2")
_SHIFTS_1BIT = np.arange(8, dtype=np.uint8)[:, None]  # bit s of a byte, for (..., 8, n) planes
_SHIFTS_2BIT = np.arange(0, 8, 2, dtype=np.uint8)[:, None]  # 2-bit field k of a byte, for (..., 4, n) planes


def _fp16(field: np.ndarray) -> np.ndarray:
    """A 2-byte field of every block, (..., 2) uint8, as float32 of shape (..., 1)."""
    return field.view(_FP16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Bytes (..., n) -> (..., 2, n) uint8: all the low nibbles, then all the high nibbles."""
    return np.stack((qs & 0x0F, qs >> 4), axis=-2)


def _per_block(a: np.ndarray, blocks: np.ndarray, *shape: int) -> np.ndarray:
    """Reshape `a`, which holds data of each block of `blocks`, to (rows, blocks per row, *shape)."""
    return a.reshape(*blocks.shape[:-1], *shape)


# ---- unquantized types: blocks are single elements, (rows, cols, itemsize) bytes ----


def _f32(b: np.ndarray) -> np.ndarray:
    return b.view("<f4").astype(np.float32)


def _f16(b: np.ndarray) -> np.ndarray:
    return _fp16(b)


def _bf16(b: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32.
    return (b.view("<u2").astype(np.uint32) << 16).view(np.float32)


# ---- 32-element blocks; each function returns (rows, blocks per row, 32) ----


def _q4_0(b: np.ndarray) -> np.ndarray:
    d = _fp16(b[..., 0:2])
    q = _per_block(_nibbles(b[..., 2:18]), b, 32)
    return (q.view(np.int8) - np.int8(8)) * d


def _q4_1(b: np.ndarray) -> np.ndarray:
    d, m = _fp16(b[..., 0:2]), _fp16(b[..., 2:4])
    q = _per_block(_nibbles(b[..., 4:20]), b, 32)
    out = q * d
    out += m
    return out


def _q5_0(b: np.ndarray) -> np.ndarray:
    d = _fp16(b[..., 0:2])
    # qh is a little-endian uint32 whose bit j is the fifth bit of element j.
    high = np.unpackbits(b[..., 2:6], axis=-1, bitorder="little")
    q = _per_block(_nibbles(b[..., 6:22]), b, 32) | (high << 4)
    return (q.view(np.int8) - np.int8(16)) * d


def _q5_1(b: np.ndarray) -> np.ndarray:
    d, m = _fp16(b[..., 0:2]), _fp16(b[..., 2:4])
    high = np.unpackbits(b[..., 4:8], axis=-1, bitorder="little")
    q = _per_block(_nibbles(b[..., 8:24]), b, 32) | (high << 4)
    out = q * d
    out += m
    return out


def _q8_0(b: np.ndarray) -> np.ndarray:
    d = _fp16(b[..., 0:2])
    return np.multiply(b[..., 2:34].view(np.int8), d, dtype=np.float32)


# ---- K-quants: super-blocks of 256 elements; each returns (rows, blocks per row, sub-blocks, sub-block) ----


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 scale bytes of a Q4_K/Q5_K super-block -> (scales, mins), each (..., 8) uint8 of 6 bits.

    Sub-blocks 0-3: scale = low 6 bits of bytes 0-3, min = low 6 bits of bytes 4-7.
    Sub-blocks 4-7: low 4 bits from bytes 8-11 (scale in the low nibble, min in the high one),
    top 2 bits from the top 2 bits of bytes 0-3 (scale) and 4-7 (min).
    """
    a, b, c = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate((a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)), axis=-1)
    mins = np.concatenate((b & 0x3F, (c >> 4) | ((b >> 6) << 4)), axis=-1)
    return scales, mins


def _k_low_nibbles(b: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """The 128 qs bytes of each super-block -> (..., 8, 32): each run of 32 bytes holds two
    sub-blocks, the low nibbles first."""
    return _per_block(_nibbles(_per_block(qs, b, 4, 32)), b, 8, 32)


def _q4_k(b: np.ndarray) -> np.ndarray:
    d, dmin = _fp16(b[..., 0:2]), _fp16(b[..., 2:4])
    scales, mins = _k_scales_mins(b[..., 4:16])
    q = _k_low_nibbles(b, b[..., 16:144])
    out = q * (d * scales)[..., None]
    out -= (dmin * mins)[..., None]
    return out


def _q5_k(b: np.ndarray) -> np.ndarray:
    d, dmin = _fp16(b[..., 0:2]), _fp16(b[..., 2:4])
    scales, mins = _k_scales_mins(b[..., 4:16])
    # Bit s of qh[l] is the fifth bit of element l of sub-block s.
    high = (b[..., None, 16:48] >> _SHIFTS_1BIT) & 1
    q = _k_low_nibbles(b, b[..., 48:176]) | (high << 4)
    out = q * (d * scales)[..., None]
    out -= (dmin * mins)[..., None]
    return out


def _q6_k(b: np.ndarray) -> np.ndarray:
    # Two halves of 128 elements, each from 64 bytes of ql and 32 of qh. Within a half, element
    # 32*k + l (k = 0..3, l = 0..31) takes its low 4 bits from nibble k // 2 of ql[l + 32 * (k % 2)]
    # and its top 2 bits from bits 2k, 2k+1 of qh[l]; each run of 16 elements has its own int8 scale.
    ql = _per_block(b[..., 0:128], b, 2, 64)
    qh = _per_block(b[..., 128:192], b, 2, 32)
    scales = b[..., 192:208].view(np.int8)
    d = _fp16(b[..., 208:210])
    low = _per_block(_nibbles(ql), b, 2, 128)
    high = _per_block((qh[..., None, :] >> _SHIFTS_2BIT) & 3, b, 2, 128)  # (..., 2, 4, 32) planes
    q = (low | (high << 4)).view(np.int8) - np.int8(32)
    return _per_block(q, b, 16, 16) * (d * scales)[..., None]


_DEQUANTIZERS: dict[GGMLType, Callable[[np.ndarray], np.ndarray]] = {
    GGMLType.F32: _f32,
    GGMLType.F16: _f16,
    GGMLType.BF16: _bf16,
    GGMLType.Q4_0: _q4_0,
    GGMLType.Q4_1: _q4_1,
    GGMLType.Q5_0: _q5_0,
    GGMLType.Q5_1: _q5_1,
    GGMLType.Q8_0: _q8_0,
    GGMLType.Q4_K: _q4_k,
    GGMLType.Q5_K: _q5_k,
    GGMLType.Q6_K: _q6_k,
}

DEQUANTIZABLE_TYPES = frozenset(_DEQUANTIZERS)


def dequantize(raw: np.ndarray, qtype: GGMLType | int, n_cols: int) -> np.ndarray:
    """Rows of GGML blocks -> float32 of shape (rows, n_cols).

    `raw` is uint8 of shape (rows, row_bytes), or 1-D for a single row; it may be a read-only view
    of a memory-mapped file and is never written. The result is always a new, writable array.
    Raises UnsupportedError for a type that cannot be dequantized, ValueError for a shape mismatch.
    """
    decode = _DEQUANTIZERS.get(qtype)
    if decode is None:
        supported = ", ".join(t.name for t in _DEQUANTIZERS)
        raise UnsupportedError(f"tensor type {type_name(int(qtype))} is not supported (supported: {supported})")
    qtype = GGMLType(qtype)
    raw = np.asarray(raw)
    if raw.ndim == 1:
        raw = raw.reshape(1, -1)
    expected = row_bytes(qtype, n_cols)
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != expected:
        raise ValueError(
            f"{qtype.name} rows of {n_cols} elements need uint8 data of shape (rows, {expected}), "
            f"got {raw.dtype} {raw.shape}"
        )
    if raw.strides[1] != 1:
        raw = np.ascontiguousarray(raw)
    block_elems, block_bytes = BLOCK_SIZES[qtype]
    blocks = raw.reshape(raw.shape[0], n_cols // block_elems, block_bytes)
    return decode(blocks).reshape(raw.shape[0], n_cols)
