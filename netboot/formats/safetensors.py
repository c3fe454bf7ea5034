"""Hugging Face checkpoints: `*.safetensors` (one file or shards) with `config.json` and `tokenizer.json`.

Each safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data_offsets relative to the end of the header) and the raw little-endian tensor data. The header is parsed
here and the data memory-mapped, so every tensor is a `QTensor` view of the file (F32, F16, BF16 become
GGML's F32, F16, BF16 with the same bytes). Only Gemma 3's norm weights are copied: they are stored as w for a
multiplier of 1 + w, which is what `ModelFile` holds.

Llama checkpoints keep q/k in the "halves" RoPE order (no permutation as llama.cpp's converter does).
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from netboot.config import LIMITS, ModelConfig, float_field, gemma3_sliding_layers, int_field
from netboot.errors import FormatError, NetbootError, UnsupportedError, clipped
from netboot.formats import ModelFile
from netboot.formats.names import EMBEDDING, OUTPUT, OUTPUT_NORM, expected_shapes
from netboot.tensors.ggml import GGMLType
from netboot.tensors.qtensor import QTensor

INDEX_NAME = "model.safetensors.index.json"
# metadata key: names of the tensors computed at load (Gemma's 1 + w norms), not views of the file's bytes
DERIVED_KEY = "netboot.derived_tensors"
MAX_HEADER = 100 * 1024 * 1024

# safetensors dtype -> (GGML type, bytes per element)
DTYPES = {"F32": (GGMLType.F32, 4), "F16": (GGMLType.F16, 2), "BF16": (GGMLType.BF16, 2)}
ELEMENT_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
    "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}

LLAMA_ARCHS = ("LlamaForCausalLM",)
GEMMA3_ARCHS = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")

_LAYER_PARTS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
}
_LLAMA_LAYER_PARTS = {**_LAYER_PARTS, "post_attention_layernorm": "ffn_norm"}
_GEMMA3_LAYER_PARTS = {
    **_LAYER_PARTS, "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
    "post_attention_layernorm": "post_attention_norm", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}
# Gemma stores a norm's weight w; its multiplier is 1 + w.
_GEMMA_NORMS = ("attn_norm", "ffn_norm", "post_ffw_norm", "post_attention_norm", "attn_q_norm", "attn_k_norm")
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)\.weight")


def safetensors_files(path: Path) -> list[Path]:
    """The data files of a checkpoint: the file itself, the shards an index names, or every *.safetensors."""
    if path.is_file():
        return [path]
    index = path / INDEX_NAME
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise FormatError(f"{index}: no weight_map")
        names = set(weight_map.values())
        for name in names:
            # a shard is a file beside the index: never a path that climbs out of the checkpoint's directory
            if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
                raise FormatError(f"{index}: weight_map names {clipped(name)}, which is not a shard's file name")
        files = [path / name for name in sorted(names)]
        for f in files:
            if not f.is_file():
                raise FormatError(f"{index}: names shard {clipped(f.name)}, which is missing")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise NetbootError(f"{path}: no *.safetensors files in this directory")
    return files


def read_safetensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], np.ndarray, int]]:
    """name -> (dtype, shape, raw bytes as a uint8 view of the mapped file, offset in the file)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{path}: too short for a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise FormatError(f"{path}: safetensors header length {n} is past the end of the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
            raise FormatError(f"{path}: safetensors header is not valid JSON ({clipped(str(exc), 120)})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    base = 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, end = _entry(path, name, info)
        if not 0 <= begin <= end or end - begin != math.prod(shape) * ELEMENT_SIZES[dtype]:
            raise FormatError(
                f"{path}: tensor {clipped(name)}'s data offsets {begin}..{end} do not fit its shape {clipped(shape)}"
            )
        if base + end > size:
            raise FormatError(
                f"{path}: tensor {clipped(name)} ends at byte {base + end}, past the end of the file ({size} bytes): "
                "the file is truncated"
            )
        out[name] = (dtype, shape, data[base + begin : base + end], base + begin)
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(path: Path, name: str, info: Any) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of one header entry, every field checked for its type before it is used."""
    bad = FormatError(f"{path}: bad safetensors header entry for {clipped(name)}: {clipped(info)}")
    if not isinstance(info, dict):
        raise bad
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets):
        raise bad
    if not isinstance(dtype, str) or dtype not in ELEMENT_SIZES:
        raise FormatError(f"{path}: tensor {clipped(name)} has unknown dtype {clipped(dtype)}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def open_safetensors(path: Path, tokenizer: str | Path | None = None) -> ModelFile:
    """Open a SafeTensors checkpoint (a file, or a directory of one or more) without copying its weights."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FormatError(f"{path}: no config.json beside the safetensors weights (needed for the hyperparameters)")
    hf = _read_json(config_path)
    archs = hf.get("architectures") or []
    if not isinstance(archs, list):
        raise FormatError(f"{config_path}: architectures must be a list, not {clipped(archs)}")
    arch = archs[0] if archs else hf.get("model_type")
    if isinstance(arch, str) and arch in LLAMA_ARCHS:
        family, text = "llama", hf
    elif isinstance(arch, str) and arch in GEMMA3_ARCHS:
        family, text = "gemma3", hf.get("text_config", hf) if arch == "Gemma3ForConditionalGeneration" else hf
        if not isinstance(text, dict):
            raise FormatError(f"{config_path}: text_config must be an object, not {clipped(text)}")
    else:
        supported = ", ".join(LLAMA_ARCHS + GEMMA3_ARCHS)
        raise UnsupportedError(f"{config_path}: architecture {clipped(arch)} is not supported ({supported} are)")

    raw: dict[str, tuple[str, tuple[int, ...], np.ndarray, int, Path]] = {}
    for file in safetensors_files(path):
        for name, entry in read_safetensors(file).items():
            raw[name] = (*entry, file)

    tensors = _canonical_tensors(raw, family)
    if OUTPUT not in tensors and not text.get("tie_word_embeddings", family == "gemma3"):
        raise FormatError(f"{path}: no lm_head.weight, and config.json does not tie it to the embeddings")
    config = _config(config_path, text, family, tensors)
    _check_shapes(path, config, tensors)
    derived = sorted(name for name, t in tensors.items() if t.data.flags.writeable)  # file views are read-only
    metadata = {"hf.config": hf, "hf.architecture": arch, DERIVED_KEY: derived}
    return ModelFile(path, "safetensors", config, tensors, _tokenizer_loader(directory, tokenizer, hf), metadata)


def _canonical_name(name: str, family: str) -> str | None:
    # Gemma 3 multimodal checkpoints put the text model under language_model (the prefix moved between versions).
    for prefix in ("model.language_model.", "language_model.model.", "model."):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            break
    else:
        if name in ("lm_head.weight", "language_model.lm_head.weight"):
            return OUTPUT
        return None
    if rest == "embed_tokens.weight":
        return EMBEDDING
    if rest == "norm.weight":
        return OUTPUT_NORM
    m = _LAYER_RE.fullmatch(rest)
    if m:
        parts = _LLAMA_LAYER_PARTS if family == "llama" else _GEMMA3_LAYER_PARTS
        part = parts.get(m.group(2))
        if part is not None:
            return f"blk.{int(m.group(1))}.{part}.weight"
    return None


def _canonical_tensors(raw: dict[str, tuple], family: str) -> dict[str, QTensor]:
    tensors: dict[str, QTensor] = {}
    for name, (dtype, shape, data, offset, file) in raw.items():
        canonical = _canonical_name(name, family)
        if canonical is None:
            continue  # vision tower, rotary tables and the like: not used
        if dtype not in DTYPES:
            raise UnsupportedError(
                f"{file}: tensor {name} has dtype {dtype}, which netboot does not support (F32, F16 and BF16 are)"
            )
        qtype = DTYPES[dtype][0]
        if not shape or len(shape) > 2:
            raise FormatError(f"{file}: tensor {name} has shape {shape}, expected a vector or a matrix")
        if family == "gemma3" and canonical.split(".")[-2] in _GEMMA_NORMS + ("output_norm",):
            values = QTensor.from_bytes(name, qtype, shape, data).to_float32()
            multiplier = np.ascontiguousarray(1.0 + values, dtype=np.float32).view(np.uint8).reshape(-1)
            # A copy: `offset` still names the stored w in the file, which is not these bytes (see DERIVED_KEY).
            tensors[canonical] = QTensor.from_bytes(canonical, GGMLType.F32, shape, multiplier, offset=offset)
        else:
            tensors[canonical] = QTensor.from_bytes(canonical, qtype, shape, data, offset=offset)
    return tensors


def _rope_params(
    config_path: Path, section: dict[str, Any] | None, default_theta: float, head_dim: int
) -> tuple[float, float, tuple[float, ...] | None]:
    """(theta, linear scaling factor, per-frequency divisors or None) of a rope_parameters / rope_scaling section;
    other scalings are refused."""
    section = section or {}
    if not isinstance(section, dict):
        raise FormatError(f"{config_path}: a RoPE section must be an object, not {clipped(section)}")
    kind = section.get("rope_type", section.get("type", "default"))
    theta = float_field(config_path, "rope_theta", section.get("rope_theta", default_theta))
    if kind == "default":
        return theta, 1.0, None
    if kind == "linear":
        return theta, float_field(config_path, "factor", section.get("factor", 1.0)), None
    if kind == "llama3":
        return theta, 1.0, _llama3_factors(config_path, section, theta, head_dim)
    raise UnsupportedError(
        f"{config_path}: RoPE scaling {clipped(kind)} is not supported (default, linear and llama3 are)"
    )


def _llama3_factors(config_path: Path, section: dict[str, Any], theta: float, head_dim: int) -> tuple[float, ...]:
    """Llama 3.1's RoPE scaling as one divisor per rotation frequency (what llama.cpp stores as rope_freqs.weight).

    Frequencies whose wavelength is under original_max_position_embeddings / high_freq_factor are kept, those over
    original_max_position_embeddings / low_freq_factor are divided by `factor`, and those between are blended:
    (1 - s) * f / factor + s * f, with s rising linearly in original_max_position_embeddings / wavelength from 0 at
    low_freq_factor to 1 at high_freq_factor."""
    names = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [name for name in names if section.get(name) is None]
    if missing:
        raise FormatError(f"{config_path}: llama3 RoPE scaling without {', '.join(missing)}")
    factor, low, high, original = (float_field(config_path, name, section[name]) for name in names)
    if not (factor > 0 and 0 < low < high and original > 0):
        raise FormatError(
            f"{config_path}: llama3 RoPE scaling needs factor > 0 and 0 < low_freq_factor < high_freq_factor, "
            f"original_max_position_embeddings > 0 (got {factor}, {low}, {high}, {original})"
        )
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / inv_freq
    smooth = (original / wavelen - low) / (high - low)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    divisors = np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, blended))
    return tuple(divisors.tolist())


def _config(config_path: Path, hf: dict[str, Any], family: str, tensors: dict[str, QTensor]) -> ModelConfig:
    def key(name: str, default: Any = None) -> Any:
        value = hf.get(name, default)
        if value is None:
            raise FormatError(f"{config_path}: missing {name}")
        return value

    def count(name: str, limit: str, default: Any = None) -> int:
        return int_field(config_path, name, key(name, default), 1, LIMITS[limit])

    if EMBEDDING not in tensors:
        raise FormatError(f"{config_path.parent}: no embedding tensor (model.embed_tokens.weight) in the weights")
    dim = count("hidden_size", "dim")
    n_heads = count("num_attention_heads", "n_heads")
    if hf.get("head_dim") is None and dim % n_heads:
        raise FormatError(f"{config_path}: num_attention_heads {n_heads} does not divide hidden_size {dim}")
    common = dict(
        n_layers=count("num_hidden_layers", "n_layers"), dim=dim, n_heads=n_heads,
        n_kv_heads=count("num_key_value_heads", "n_kv_heads", n_heads),
        head_dim=count("head_dim", "head_dim", dim // n_heads), ffn_dim=count("intermediate_size", "ffn_dim"),
        vocab_size=tensors[EMBEDDING].shape[0],
        context_length=count("max_position_embeddings", "context_length", 2048),
    )
    if common["n_heads"] % common["n_kv_heads"]:
        raise FormatError(f"{config_path}: num_attention_heads is not a multiple of num_key_value_heads")
    rope = hf.get("rope_parameters")

    if family == "llama":
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise UnsupportedError(f"{config_path}: Llama with attention or MLP biases is not supported")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedError(f"{config_path}: activation {clipped(act)} is not supported for Llama (silu is)")
        section = dict(rope) if isinstance(rope, dict) else dict(_section(config_path, hf, "rope_scaling"))
        section.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
        theta, factor, freq_factors = _rope_params(config_path, section, 10000.0, common["head_dim"])
        if factor != 1.0:
            raise UnsupportedError(f"{config_path}: linear RoPE scaling is not supported for Llama")
        return ModelConfig(
            arch="llama", **common, norm_eps=float_field(config_path, "rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
            rope_base=theta, rope_style="halves", rope_freq_factors=freq_factors,
        ).validate(config_path)

    # Gemma 3 (text)
    for name in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(name) is not None:
            raise UnsupportedError(f"{config_path}: Gemma 3 with {name} is not supported")
    if hf.get("use_bidirectional_attention"):
        raise UnsupportedError(f"{config_path}: bidirectional attention (an embedding model) is not supported")
    act = hf.get("hidden_activation", "gelu_pytorch_tanh")
    if not isinstance(act, str) or act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise UnsupportedError(
            f"{config_path}: activation {clipped(act)} is not supported for Gemma 3 (gelu_pytorch_tanh is)"
        )
    if isinstance(rope, dict) and ("full_attention" in rope or "sliding_attention" in rope):
        full, local = rope.get("full_attention"), rope.get("sliding_attention")
    else:
        full = {**_section(config_path, hf, "rope_scaling"), "rope_theta": hf.get("rope_theta", 1_000_000.0)}
        local = {"rope_theta": hf.get("rope_local_base_freq", 10000.0)}
    theta, factor, freq_factors = _rope_params(config_path, full, 1_000_000.0, common["head_dim"])
    local_theta, local_factor, local_freq_factors = _rope_params(config_path, local, 10000.0, common["head_dim"])
    if local_factor != 1.0 or local_freq_factors is not None:
        raise UnsupportedError(f"{config_path}: RoPE scaling of the sliding-window layers is not supported")
    if freq_factors is not None:
        raise UnsupportedError(f"{config_path}: llama3 RoPE scaling is not supported for Gemma 3")
    n_layers = common["n_layers"]
    window = hf.get("sliding_window", 4096)
    scalar = float_field(config_path, "query_pre_attn_scalar", hf.get("query_pre_attn_scalar", 256))
    if scalar <= 0:
        raise FormatError(f"{config_path}: query_pre_attn_scalar {scalar!r} is not positive")
    return ModelConfig(
        arch="gemma3", **common, norm_eps=float_field(config_path, "rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
        rope_base=theta, rope_style="halves", sliding_layers=_gemma_sliding(config_path, hf, n_layers),
        sliding_window=None if window is None else int_field(config_path, "sliding_window", window),
        rope_base_local=local_theta, rope_scale=factor, attn_scale=scalar**-0.5, embed_scale=math.sqrt(dim),
        activation="gelu_tanh", qk_norm=True, post_norms=True,
    ).validate(config_path)


def _section(config_path: Path, hf: dict[str, Any], name: str) -> dict[str, Any]:
    section = hf.get(name) or {}
    if not isinstance(section, dict):
        raise FormatError(f"{config_path}: {name} must be an object, not {clipped(section)}")
    return section


def _gemma_sliding(config_path: Path, hf: dict[str, Any], n_layers: int) -> list[bool]:
    """Which layers use the sliding window: config.json's layer_types, else every layer but each pattern-th."""
    layer_types = hf.get("layer_types")
    if layer_types:
        if not isinstance(layer_types, list):
            raise FormatError(f"{config_path}: layer_types must be a list, not {clipped(layer_types)}")
        if len(layer_types) != n_layers:
            raise FormatError(f"{config_path}: layer_types has {len(layer_types)} entries for {n_layers} layers")
        return [t == "sliding_attention" for t in layer_types]
    pattern = hf.get("sliding_window_pattern", 6)
    pattern = int_field(config_path, "sliding_window_pattern", pattern, 1, LIMITS["n_layers"])
    return gemma3_sliding_layers(n_layers, pattern)


def _check_shapes(path: Path, c: ModelConfig, tensors: dict[str, QTensor]) -> None:
    expected = expected_shapes(c)
    if OUTPUT in tensors:
        expected[OUTPUT] = (c.vocab_size, c.dim)
    for name, shape in expected.items():
        t = tensors.get(name)
        if t is None:
            raise FormatError(f"{path}: the weights have no {name} (config.json: {c.n_layers} layers)")
        if t.shape != shape:
            raise FormatError(f"{path}: tensor {name} has shape {t.shape}, config.json implies {shape}")


def _tokenizer_loader(directory: Path, tokenizer: str | Path | None, hf: dict[str, Any]):
    if tokenizer is None:
        candidate = directory / "tokenizer.json"
        if not candidate.is_file():
            return None
    else:
        candidate = Path(tokenizer)
        if candidate.is_dir():
            candidate = candidate / "tokenizer.json"
        if not candidate.is_file():
            raise NetbootError(f"tokenizer not found: {candidate}")
    tok_config_path = candidate.parent / "tokenizer_config.json"

    def load():
        from netboot.tokenizers.hf import HFTokenizer
        from netboot.tokenizers.llama2c import Llama2cTokenizer

        if candidate.suffix == ".bin":
            return Llama2cTokenizer.from_file(candidate)
        tok_config = _read_json(tok_config_path) if tok_config_path.is_file() else None
        return HFTokenizer.from_file(candidate, hf, tok_config)

    return load


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: cannot read JSON ({clipped(str(exc), 120)})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: expected a JSON object")
    return value
