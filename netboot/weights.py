"""Where the model's weights live. `ResidentWeights` serves them from the mapped file; later kinds stream
them from the network or disk, or hold them on a GPU, behind the same three calls."""

from __future__ import annotations

from typing import Protocol

from netboot.tensor import QTensor

LAYER_PARTS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
    "attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm",
)


class Weights(Protocol):
    def layer(self, i: int) -> dict[str, QTensor]: ...
    def embedding(self) -> QTensor: ...
    def output_norm(self) -> QTensor: ...
    def output(self) -> QTensor: ...


class ResidentWeights:
    """Every tensor is a view into the model file's memory map; nothing is copied."""

    def __init__(self, tensors: dict[str, QTensor]):
        self.tensors = tensors
        self._layers: dict[int, dict[str, QTensor]] = {}

    def layer(self, i: int) -> dict[str, QTensor]:
        if i not in self._layers:
            parts = ((part, self.tensors.get(f"blk.{i}.{part}.weight")) for part in LAYER_PARTS)
            self._layers[i] = {part: t for part, t in parts if t is not None}
        return self._layers[i]

    def embedding(self) -> QTensor:
        return self.tensors["token_embd.weight"]

    def output_norm(self) -> QTensor:
        return self.tensors["output_norm.weight"]

    def output(self) -> QTensor:
        # Tied embeddings: the output projection is the token embedding table.
        out = self.tensors.get("output.weight")
        return out if out is not None else self.tensors["token_embd.weight"]
