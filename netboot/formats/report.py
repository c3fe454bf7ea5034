"""`netboot info`: what a model file holds, including the byte range of each layer (what a streamer fetches)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from netboot.errors import NetbootError
from netboot.formats import ModelFile
from netboot.formats.names import global_tensors, layer_byte_ranges


def describe(file: ModelFile) -> dict[str, Any]:
    tensors = file.tensors.values()
    n_params = sum(int(_elements(t.shape)) for t in tensors)
    return {
        "path": str(file.path),
        "format": file.format,
        "file_bytes": file.path.stat().st_size if file.path.is_file() else None,
        "config": dataclasses.asdict(file.config),
        "parameters": n_params,
        "weight_bytes": sum(t.nbytes for t in tensors),
        "tensor_types": dict(Counter(t.qtype.name for t in tensors)),
        "global_tensors": [{"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "start": t.offset,
                            "end": t.offset + t.nbytes} for t in global_tensors(file)],
        "layers": layer_byte_ranges(file),
        "tokenizer": _tokenizer_summary(file),
    }


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tokenizer_summary(file: ModelFile) -> dict[str, Any]:
    try:
        tok = file.tokenizer
    except NetbootError as e:
        return {"type": None, "error": str(e)}
    return {"type": type(tok).__name__, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "add_bos": tok.add_bos}


def render(report: dict[str, Any]) -> str:
    c = report["config"]
    mb = 1 / 1e6
    lines = [
        f"model:        {report['path']} ({report['format']}"
        + (f", {report['file_bytes'] * mb:.1f} MB)" if report["file_bytes"] else ")"),
        f"architecture: {c['arch']}: {c['n_layers']} layers, dim {c['dim']}, {c['n_heads']} heads "
        f"({c['n_kv_heads']} kv), head dim {c['head_dim']}, ffn {c['ffn_dim']}, vocab {c['vocab_size']}, "
        f"context {c['context_length']}",
        f"parameters:   {report['parameters'] / 1e6:.1f} M in {report['weight_bytes'] * mb:.1f} MB of weights",
        f"rope:         base {c['rope_base']:g} ({c['rope_style']})"
        + (f", sliding window {c['sliding_window']} with base {c['rope_base_local']:g} on "
           f"{sum(c['sliding_layers'])} of {c['n_layers']} layers" if c["sliding_window"] else ""),
        "tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(report["tensor_types"].items())),
    ]
    tok = report["tokenizer"]
    if tok["type"]:
        lines.append(f"tokenizer:    {tok['type']}, {tok['vocab_size']} tokens, bos {tok['bos_id']}, "
                     f"eos {tok['eos_id']}, add bos {tok['add_bos']}")
    else:
        lines.append(f"tokenizer:    none ({tok['error']})")
    lines.append("global tensors:")
    for t in report["global_tensors"]:
        lines.append(f"  {t['name']:<24} {t['type']:<5} {str(tuple(t['shape'])):<16} bytes [{t['start']}, {t['end']})")
    lines.append("layers (byte ranges in the file):")
    for layer in report["layers"]:
        types = ",".join(sorted({t["type"] for t in layer["tensors"]}))
        lines.append(f"  layer {layer['layer']:>3}: bytes [{layer['start']}, {layer['end']}) "
                     f"{layer['bytes'] * mb:8.2f} MB  {len(layer['tensors'])} tensors ({types})")
    return "\n".join(lines)
