"""What every weight matrix answers, wherever its bytes are: a `QTensor` in memory, a table streamed from a source
in chunks (`netboot.placement.streamed`), blocks in a device's memory. A backend computes on any of them through
these two calls, and never asks which kind it holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from netboot.errors import NetbootError

if TYPE_CHECKING:
    from netboot.tensors.ggml import GGMLType
    from netboot.tensors.qtensor import QTensor


@runtime_checkable
class Matrix(Protocol):
    name: str
    qtype: GGMLType
    shape: tuple[int, ...]

    @property
    def rows(self) -> int: ...
    @property
    def cols(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

    def map_rows(self, fn: Callable[[QTensor], np.ndarray]) -> np.ndarray:
        """`fn` on the matrix's rows as blocks in memory, all at once or a run of rows at a time in order; its
        outputs (n, rows of the run) are joined along the last axis: (n, rows)."""

    def select_rows(self, ids: np.ndarray) -> QTensor:
        """Rows `ids` (each checked to lie in the matrix) as blocks in memory: an embedding lookup reads only
        those."""


def check_rows(ids: np.ndarray, rows: int, name: str) -> np.ndarray:
    """`ids` as a flat int64 array, each in [0, rows): a token id outside the vocabulary is an error, never a
    wrapped-around index."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= rows)]
    if bad.size:
        raise NetbootError(f"token id {int(bad[0])} is outside {name} ({rows} rows)")
    return ids
