"""Where a model's weights live, as one protocol that every placement implements: views of the memory-mapped file
(`resident`), a ring of buffers read from a source as the forward pass asks (`streamed`), later device memory.
`Residency` is the placement's part of a plan: which layers stay and which stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from netboot.tensors.matrix import Matrix
from netboot.tensors.qtensor import QTensor


@runtime_checkable
class Weights(Protocol):
    def layer(self, i: int) -> Mapping[str, QTensor]:
        """Layer i's tensors by part name ("attn_q", ...); a streamed layer's are valid until layer i + prefetch
        is asked for."""

    def embedding(self) -> Matrix: ...
    def output_norm(self) -> QTensor: ...

    def output(self) -> Matrix:
        """The output projection (the embedding table itself when they are tied)."""


@dataclass(frozen=True)
class Residency:
    """Which of a stage's layers stay in memory and which are read from the source on each forward pass."""

    resident_layers: tuple[int, ...]
    streamed_layers: tuple[int, ...] = ()
    table_resident: bool = True  # the embedding / output table(s)
    prefetch: int = 0  # streamed layers read ahead of the one computing
    chunk_bytes: int | None = None  # a streamed table's read size (None: no table streams)
