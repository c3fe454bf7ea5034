"""`ResidentWeights`: every weight is a view of the model file's memory map (or of the memory a diskless boot
received it into); nothing is copied."""

from __future__ import annotations

from netboot.formats.names import EMBEDDING, OUTPUT, OUTPUT_NORM, layer_parts
from netboot.tensors.qtensor import QTensor


class ResidentWeights:
    def __init__(self, tensors: dict[str, QTensor]):
        self.tensors = tensors
        self._layers: dict[int, dict[str, QTensor]] = {}

    def layer(self, i: int) -> dict[str, QTensor]:
        if i not in self._layers:
            self._layers[i] = layer_parts(self.tensors, i)
        return self._layers[i]

    def embedding(self) -> QTensor:
        return self.tensors[EMBEDDING]

    def output_norm(self) -> QTensor:
        return self.tensors[OUTPUT_NORM]

    def output(self) -> QTensor:
        # Tied embeddings: the output projection is the token embedding table.
        return self.tensors.get(OUTPUT, self.tensors[EMBEDDING])
