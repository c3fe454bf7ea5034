"""Synthetic tensor bytes of every GGML type netboot reads, for tests that need weights without a real model.

`random_blocks(qtype, rows, cols, rng)` returns the bytes of a (rows, cols) tensor in the file's own layout,
shape (rows, row_bytes) uint8, ready to write into a GGUF file or wrap in a `QTensor`:

* F32 / F16 / BF16: normal(0, scale) values, encoded (BF16 rounded to nearest even).
* Quantized types: every packed field (nibbles, high bits, 6-bit and int8 sub-block scales and mins) is
  uniformly random, so every bit pattern gets decoded; only the fp16 block scales (d, dmin, m) are chosen:
  finite and normal or subnormal, never NaN or Inf, and sized so that the dequantized values have a standard
  deviation within a small factor of `scale` and a mean near zero. d takes a random sign in the types whose
  reference quantizer can store a negative one (Q4_0, Q5_0, Q8_0, Q6_K).

The data are valid but not the quantization of anything: compare against a dequantization, not against
original floats. `float_bytes` encodes given values for the unquantized types.
"""

from __future__ import annotations

import numpy as np

from netboot.tensors.ggml import BLOCK_SIZES, GGMLType, row_bytes

# Standard deviation of a uniform integer on 0..n-1.
_SD4, _SD5 = np.sqrt((16**2 - 1) / 12), np.sqrt((32**2 - 1) / 12)

# For each K-quant: sd of the dequantized values per unit of d, with dmin = _DMIN_RATIO * d (which centres
# them), for uniformly random q, 6-bit scales and 6-bit mins. Worked out from the moments of those uniforms.
_DMIN_RATIO = {GGMLType.Q4_K: 7.5, GGMLType.Q5_K: 15.5}
_K_SD = {GGMLType.Q4_K: 258.3, GGMLType.Q5_K: 526.9}


def float_bytes(values: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """float values (rows, cols) -> their F32, F16 or BF16 encoding, (rows, cols * itemsize) uint8."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float32))
    if qtype == GGMLType.F32:
        enc = values.astype("<f4")
    elif qtype == GGMLType.F16:
        enc = values.astype("<f2")
    elif qtype == GGMLType.BF16:
        bits = values.view(np.uint32).astype(np.uint64)
        enc = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    else:
        raise ValueError(f"{qtype.name} is not a float type")
    return np.ascontiguousarray(enc).view(np.uint8).reshape(values.shape[0], -1)


def _fp16(values: np.ndarray) -> np.ndarray:
    """float scales (..., n_blocks) -> (..., n_blocks, 2) uint8 of their fp16 encoding."""
    enc = np.asarray(values, dtype="<f2")
    assert np.isfinite(enc).all()
    return enc[..., None].view(np.uint8)


def random_blocks(qtype: GGMLType, rows: int, cols: int, rng: np.random.Generator, scale: float = 0.02) -> np.ndarray:
    """Random valid bytes of a (rows, cols) tensor of type `qtype`: shape (rows, row_bytes) uint8, C-contiguous.

    `cols` must be a whole number of the type's blocks. The dequantized values have a standard deviation
    within a factor of about 2 of `scale` (see the module docstring for what is random).
    """
    qtype = GGMLType(qtype)
    if qtype in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        return float_bytes(rng.standard_normal((rows, cols)) * scale, qtype)
    if qtype not in BLOCK_SIZES:
        raise ValueError(f"no generator for {qtype.name}")
    block_elems, block_bytes = BLOCK_SIZES[qtype]
    n_blocks = row_bytes(qtype, cols) // block_bytes
    blocks = rng.integers(0, 256, (rows, n_blocks, block_bytes), dtype=np.uint8)
    # A per-block factor spreads the scales over a range, as in a real model.
    spread = rng.uniform(0.5, 1.5, (rows, n_blocks))
    sign = rng.choice(np.array([-1.0, 1.0]), (rows, n_blocks))

    if qtype == GGMLType.Q4_0:
        blocks[..., 0:2] = _fp16(sign * spread * scale / _SD4)
    elif qtype == GGMLType.Q5_0:
        blocks[..., 0:2] = _fp16(sign * spread * scale / _SD5)
    elif qtype == GGMLType.Q8_0:
        blocks[..., 0:2] = _fp16(sign * spread * scale / np.sqrt((256**2 - 1) / 12))
    elif qtype in (GGMLType.Q4_1, GGMLType.Q5_1):
        sd, mid = (_SD4, 7.5) if qtype == GGMLType.Q4_1 else (_SD5, 15.5)
        d = spread * scale / sd
        blocks[..., 0:2] = _fp16(d)
        blocks[..., 2:4] = _fp16(-d * rng.uniform(mid - 2, mid + 2, (rows, n_blocks)))  # m: the block's minimum
    elif qtype in (GGMLType.Q4_K, GGMLType.Q5_K):
        d = spread * scale / _K_SD[qtype]
        blocks[..., 0:2] = _fp16(d)
        blocks[..., 2:4] = _fp16(d * _DMIN_RATIO[qtype])
    elif qtype == GGMLType.Q6_K:
        # q - 32 is uniform on -32..31 (sd 18.5), int8 sub-block scales uniform (rms 73.9).
        blocks[..., 208:210] = _fp16(sign * spread * scale / (18.47 * 73.9))
    else:
        raise ValueError(f"no generator for {qtype.name}")
    return blocks.reshape(rows, n_blocks * block_bytes)
