"""The one definition of a model's tensor names, their expected shapes, and the byte span of each layer.

Every format's reader maps its names onto GGUF's (`token_embd.weight`, `blk.N.attn_q.weight`, ...); the forward
pass, the streamer, `netboot info` and the file server's catalog all find a layer's tensors and its bytes here, so
the span a client streams is the span the server published a digest for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netboot.tensors.qtensor import QTensor

if TYPE_CHECKING:
    from netboot.config import ModelConfig
    from netboot.formats import ModelFile

# The parts of a layer, by their GGUF names (blk.N.<part>.weight); the last four only some architectures have.
LAYER_PARTS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
    "attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm",
)
EMBEDDING = "token_embd.weight"
OUTPUT_NORM = "output_norm.weight"
OUTPUT = "output.weight"  # absent when tied to the embedding


def layer_name(layer: int, part: str) -> str:
    return f"blk.{layer}.{part}.weight"


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a model of this config must have, with their shapes (out_features, in_features)."""
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    shapes = {EMBEDDING: (c.vocab_size, c.dim), OUTPUT_NORM: (c.dim,)}
    layer = {"attn_norm": (c.dim,), "attn_q": (q, c.dim), "attn_k": (kv, c.dim), "attn_v": (kv, c.dim),
             "attn_output": (c.dim, q), "ffn_norm": (c.dim,), "ffn_gate": (c.ffn_dim, c.dim),
             "ffn_up": (c.ffn_dim, c.dim), "ffn_down": (c.dim, c.ffn_dim)}
    if c.qk_norm:
        layer |= {"attn_q_norm": (c.head_dim,), "attn_k_norm": (c.head_dim,)}
    if c.post_norms:
        layer |= {"post_attention_norm": (c.dim,), "post_ffw_norm": (c.dim,)}
    for i in range(c.n_layers):
        shapes |= {layer_name(i, part): shape for part, shape in layer.items()}
    return shapes


def layer_parts(tensors: dict[str, QTensor], layer: int) -> dict[str, QTensor]:
    """A layer's tensors by part name ("attn_q", ...), those the model has."""
    parts = ((part, tensors.get(layer_name(layer, part))) for part in LAYER_PARTS)
    return {part: t for part, t in parts if t is not None}


@dataclass
class Span:
    """Bytes [start, end) of the model file holding one layer's tensors (in file order)."""

    start: int
    end: int
    tensors: list[QTensor]

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def layer_spans(file: ModelFile) -> dict[int, Span]:
    """Each layer's span in the file: what a streamer reads, and what the catalog publishes digests of."""
    spans = {}
    for i in range(file.config.n_layers):
        tensors = sorted(layer_parts(file.tensors, i).values(), key=lambda t: t.offset)
        spans[i] = Span(tensors[0].offset, max(t.offset + t.nbytes for t in tensors), tensors)
    return spans


def layer_byte_ranges(file: ModelFile) -> list[dict[str, Any]]:
    """`layer_spans` as records for `netboot info --json` and the catalog: each tensor's own range too."""
    return [{"layer": i, "start": span.start, "end": span.end, "bytes": sum(t.nbytes for t in span.tensors),
             "tensors": [{"name": t.name, "type": t.qtype.name, "start": t.offset, "end": t.offset + t.nbytes}
                         for t in span.tensors]}
            for i, span in layer_spans(file).items()]


def global_tensors(file: ModelFile) -> list[QTensor]:
    """The tensors outside every layer's parts (the table(s), the output norm, rope factors, and any tensor a
    file carries that no layer reads), in the order the file lists them."""
    in_layers = {t.name for span in layer_spans(file).values() for t in span.tensors}
    return [t for t in file.tensors.values() if t.name not in in_layers]
