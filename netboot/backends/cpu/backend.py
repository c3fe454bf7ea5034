"""`CpuBackend`: the `Backend` operations on numba kernels over the block bytes, numpy for attention over a
prompt, and the one-call decoding layer (`fused`) as its fused capability."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

import numpy as np

from netboot.backends.cpu import fused, ops
from netboot.backends.cpu.dequant import dequantize
from netboot.backends.cpu.linear import matmul, vector
from netboot.config import ModelConfig
from netboot.tensors.matrix import Matrix
from netboot.tensors.qtensor import QTensor


class CpuBackend:
    name = "cpu"

    def __init__(self, fused_decode: bool = True):
        # One-token steps run each layer in one compiled call (`fused`); off, they take the plain steps. Off under
        # --max-memory: loading that call's code holds 8 MB, and a streamed token's reads take far longer than the
        # 1.4 ms per token it saves.
        self.fused_decode = fused_decode
        # Norm weights as float32, by tensor name and the memory its bytes are a view of (a model's map, or one of a
        # streamed model's few buffers), so that two models never share an entry. id(): 40 ns, an address 2.5 us.
        self._vectors: dict[tuple[str, int], np.ndarray] = {}
        self._shape: tuple[ModelConfig, fused.LayerShape] | None = None

    def step(self, size: int) -> AbstractContextManager[None]:
        from netboot.backends.cpu import kernels  # numba loads on first use

        return kernels.step(size)

    def linear(self, x: np.ndarray, w: Matrix) -> np.ndarray:
        return matmul(x, w)

    def take_rows(self, w: Matrix, ids: np.ndarray) -> np.ndarray:
        rows = w.select_rows(ids)
        return dequantize(rows.data, rows.qtype, rows.cols)

    def vector(self, t: QTensor) -> np.ndarray:
        """A 1-D weight as float32, converted once."""
        owner = t.data.base
        key = (t.name, id(t.data if owner is None else owner))
        v = self._vectors.get(key)
        if v is None:
            v = self._vectors[key] = vector(t)
        return v

    def norm(self, x: np.ndarray, w: QTensor, eps: float) -> np.ndarray:
        return ops.rms_norm(np.ascontiguousarray(x), self.vector(w), eps)

    def rope(self, x: np.ndarray, angles: np.ndarray, inv_freq: np.ndarray, halves: bool) -> np.ndarray:
        return ops.rope(x, angles, inv_freq, halves)

    def glu(self, gate: np.ndarray, up: np.ndarray, kind: str) -> np.ndarray:
        return ops.gelu_tanh_mul(gate, up) if kind == "gelu_tanh" else ops.silu_mul(gate, up)

    def attend(self, q: np.ndarray, keys: np.ndarray, values: np.ndarray, positions: np.ndarray, window: int | None,
               scale: float) -> np.ndarray:
        t, n_heads, head_dim = q.shape
        if t == 1 and keys.flags.c_contiguous and values.flags.c_contiguous:  # a decoding step: one compiled loop
            pos = int(positions[0])
            first = max(0, pos - window + 1) if window is not None else 0
            return ops.attend_one(np.ascontiguousarray(q[0]), keys, values, first, pos + 1, np.float32(scale))[None]
        n_kv_heads = keys.shape[0]
        # Grouped-query attention: query heads are grouped by the key/value head they share.
        q = q.transpose(1, 0, 2).reshape(n_kv_heads, n_heads // n_kv_heads, t, head_dim)
        scores = np.matmul(q, keys[:, None].transpose(0, 1, 3, 2)) * np.float32(scale)  # (kv, group, t, s)
        key_pos = np.arange(keys.shape[1])
        masked = key_pos[None, :] > positions[:, None]
        if window is not None:
            masked |= positions[:, None] - key_pos[None, :] >= window
        probs = softmax(np.where(masked, np.float32(-np.inf), scores))
        out = np.matmul(probs, values[:, None])  # (kv, group, t, head_dim)
        return out.reshape(n_heads, t, head_dim).transpose(1, 0, 2).reshape(t, n_heads * head_dim)

    def fused_layer(self, config: ModelConfig, x: np.ndarray, w: Mapping[str, QTensor], keys: np.ndarray,
                    values: np.ndarray, pos: int, first: int, at: float, inv_freq: np.ndarray) -> np.ndarray:
        if self._shape is None or self._shape[0] is not config:
            self._shape = (config, fused.LayerShape.of(config))
        shape = self._shape[1]
        products = [(w[p].data, w[p].qtype) for p in fused.PRODUCTS]
        norms = [self.vector(w[p]) if p in w else fused.NO_NORM for p in fused.NORMS]
        return fused.run_layer(shape, x, products, norms, keys, values, pos, first, at, inv_freq)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
