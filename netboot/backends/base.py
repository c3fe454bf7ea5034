"""The `Backend` contract: the operations of one transformer layer on one device. `netboot.model.layer` writes a
layer's steps once against it; a backend may also offer the whole one-token layer as one call (`fused_decode`).

Arrays are float32 numpy arrays on the host at this boundary: hidden states (T, dim) in, (T, dim) out. Weight
matrices are `Matrix`es (`netboot.tensors.matrix`): a backend computes on their blocks, wherever they lie.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from netboot.errors import UnsupportedError

if TYPE_CHECKING:
    from netboot.config import ModelConfig
    from netboot.tensors.matrix import Matrix
    from netboot.tensors.qtensor import QTensor


@runtime_checkable
class Backend(Protocol):
    name: str  # "cpu"
    fused_decode: bool  # whether fused_layer may be called

    def step(self, size: int) -> AbstractContextManager[None]:
        """A context for one forward pass of `size` tokens: the backend may time it to tune itself (the CPU
        backend's thread count). Entered and left on the thread that computes."""

    def linear(self, x: np.ndarray, w: Matrix) -> np.ndarray:
        """x (n, cols) @ w.T -> (n, rows), on w's blocks."""

    def take_rows(self, w: Matrix, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` of w as float32 (an embedding lookup); an id outside w is an error."""

    def norm(self, x: np.ndarray, w: QTensor, eps: float) -> np.ndarray:
        """RMS norm over the last axis, scaled by w."""

    def rope(self, x: np.ndarray, angles: np.ndarray, inv_freq: np.ndarray, halves: bool) -> np.ndarray:
        """Rotary embedding of x (T, heads, head_dim) at position multipliers `angles` (T,)."""

    def glu(self, gate: np.ndarray, up: np.ndarray, kind: str) -> np.ndarray:
        """act(gate) * up, act "silu" (SwiGLU) or "gelu_tanh" (GeGLU)."""

    def attend(self, q: np.ndarray, keys: np.ndarray, values: np.ndarray, positions: np.ndarray, window: int | None,
               scale: float) -> np.ndarray:
        """Causal grouped-query attention of q (T, heads, head_dim) at `positions` over keys/values (kv_heads, S,
        head_dim) of positions 0..S-1, each query seeing at most `window` positions back when given ->
        (T, heads * head_dim)."""

    def fused_layer(self, config: ModelConfig, x: np.ndarray, w: Mapping[str, QTensor], keys: np.ndarray,
                    values: np.ndarray, pos: int, first: int, at: float, inv_freq: np.ndarray) -> np.ndarray:
        """A whole layer for one token x (1, dim) at `pos`, attending over positions first..pos of the layer's KV
        buffers (which get this position's key and value); only where `fused_decode`."""


def select(name: str = "cpu", *, fused_decode: bool = True) -> Backend:
    """The backend called `name`."""
    if name == "cpu":
        from netboot.backends.cpu.backend import CpuBackend

        return CpuBackend(fused_decode=fused_decode)
    raise UnsupportedError(f"backend {name!r} is not available (this build has: cpu)")
