"""Small random Llama models written in every format netboot reads, and Hugging Face references built on them.

Weights travel as a dict of float32 arrays under netboot's canonical (GGUF) names, in the *reference* order: q/k
rows as Hugging Face keeps them (RoPE "halves"). Writers of formats that store q/k in the interleaved RoPE order
(GGUF, llama2.c) permute them the way llama.cpp's convert_hf_to_gguf.py and llama2.c's export.py do, so a model
written in any format from the same dict computes the same function as `hf_llama(config, weights)`.

Writers return the weights as stored (rounded to F16/BF16, or dequantized by gguf-py's reference code), in
reference order: that is what a reference model must be built from. torch and transformers are imported only by
the `hf_*` helpers.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from netboot.tensors.ggml import BLOCK_SIZES, GGMLType
from support.quantdata import float_bytes, random_blocks

FLOAT_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)
LAYER_PARTS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")

# canonical part -> Hugging Face Llama name within model.layers.N
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


@dataclass(frozen=True)
class SynthConfig:
    """A small Llama: GQA by default (4 query heads share 2 key/value heads)."""

    dim: int = 64
    hidden: int = 192
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    vocab: int = 300
    seq_len: int = 128
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    tied: bool = False  # output projection shared with the token embedding

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical name -> numpy shape of every tensor."""
        layer = {
            "attn_norm": (self.dim,), "attn_q": (self.dim, self.dim), "attn_k": (self.kv_dim, self.dim),
            "attn_v": (self.kv_dim, self.dim), "attn_output": (self.dim, self.dim), "ffn_norm": (self.dim,),
            "ffn_gate": (self.hidden, self.dim), "ffn_up": (self.hidden, self.dim), "ffn_down": (self.dim, self.hidden),
        }
        out = {"token_embd.weight": (self.vocab, self.dim)}
        for i in range(self.n_layers):
            out.update({f"blk.{i}.{part}.weight": shape for part, shape in layer.items()})
        out["output_norm.weight"] = (self.dim,)
        if not self.tied:
            out["output.weight"] = (self.vocab, self.dim)
        return out


SMALL = SynthConfig()
# Rows of whole 256-element super-blocks, for the K-quants.
K_QUANT = replace(SMALL, dim=256, hidden=512)


def config_for(qtype: GGMLType, **changes: Any) -> SynthConfig:
    base = K_QUANT if BLOCK_SIZES[qtype][0] == 256 else SMALL
    return replace(base, **changes)


def _scale(name: str, shape: tuple[int, ...]) -> float:
    """Standard deviation that keeps activations near unit scale: 1/sqrt(fan-in), embeddings 1."""
    return 1.0 if name == "token_embd.weight" else 1.0 / math.sqrt(shape[-1])


def random_weights(config: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random float32 weights in reference order; norm multipliers near 1."""
    out = {}
    for name, shape in config.shapes().items():
        if len(shape) == 1:
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) * _scale(name, shape)).astype(np.float32)
    return out


def rounded(weights: dict[str, np.ndarray], qtype: GGMLType) -> dict[str, np.ndarray]:
    """The weights as a file of float type `qtype` holds them (matrices rounded, norms kept float32)."""
    return {name: w if w.ndim == 1 else decode(float_bytes(w, qtype), qtype, w.shape) for name, w in weights.items()}


def decode(raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """gguf-py's reference dequantization of raw block bytes (independent of netboot's)."""
    values = gguf.quants.dequantize(np.ascontiguousarray(raw, dtype=np.uint8), gguf.GGMLQuantizationType(int(qtype)))
    return np.asarray(values, dtype=np.float32).reshape(shape)


# -- RoPE orders ------------------------------------------------------------------------------------------------


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reference ("halves") rows -> interleaved-RoPE rows, as convert_hf_to_gguf.py's permute()."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved-RoPE rows -> reference ("halves") rows: the inverse of `permute_qk`."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qk_heads(name: str, config: SynthConfig) -> int | None:
    if name.endswith(".attn_q.weight"):
        return config.n_heads
    if name.endswith(".attn_k.weight"):
        return config.n_kv_heads
    return None


def llama3_rope_factors(config: SynthConfig, scaling: dict[str, Any]) -> np.ndarray:
    """Llama 3.1's RoPE scaling of `config`'s frequencies as float32 divisors, head_dim / 2 of them: what llama.cpp's
    converter stores as rope_freqs.weight. Frequency by frequency, as Meta's reference scales them."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    divisors = []
    for i in range(config.head_dim // 2):
        freq = 1.0 / config.rope_base ** (2 * i / config.head_dim)
        wavelength = 2 * math.pi / freq
        if wavelength < original / high:
            scaled = freq
        elif wavelength > original / low:
            scaled = freq / factor
        else:
            smooth = (original / wavelength - low) / (high - low)
            scaled = (1 - smooth) * freq / factor + smooth * freq
        divisors.append(freq / scaled)
    return np.array(divisors, dtype=np.float32)


# -- GGUF -------------------------------------------------------------------------------------------------------


def write_gguf_tensors(
    path: Path, config: SynthConfig, tensors: dict[str, np.ndarray | tuple[GGMLType, np.ndarray]],
    arch: str = "llama", metadata: dict[str, Any] | None = None,
) -> Path:
    """A Llama GGUF of `tensors` exactly as given (file order: q/k already interleaved). A float32 array is
    written as F32; a (type, raw uint8 (rows, row_bytes)) pair as those bytes. `metadata` adds or overrides keys."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.n_layers)
    writer.add_context_length(config.seq_len)
    writer.add_embedding_length(config.dim)
    writer.add_feed_forward_length(config.hidden)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_rope_dimension_count(config.head_dim)
    for key, value in (metadata or {}).items():
        _add_metadata(writer, key, value)
    for name, t in tensors.items():
        if isinstance(t, tuple):
            qtype, raw = t
            writer.add_tensor(name, np.ascontiguousarray(raw, dtype=np.uint8),
                              raw_dtype=gguf.GGMLQuantizationType(int(qtype)))
        else:
            writer.add_tensor(name, np.require(t, np.float32, "C"))  # keeps a 0-d array 0-d
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_metadata(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        (writer.add_int32 if value < 0 else writer.add_uint32)(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def write_gguf(
    path: Path, config: SynthConfig, weights: dict[str, np.ndarray], qtype: GGMLType = GGMLType.F32,
    metadata: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """GGUF of reference-order float `weights`, matrices stored as `qtype` (quantized with gguf-py), norms F32.
    Returns the weights as stored, in reference order."""
    tensors: dict[str, np.ndarray | tuple[GGMLType, np.ndarray]] = {}
    stored = {}
    for name, w in weights.items():
        heads = _qk_heads(name, config)
        file_w = permute_qk(w, heads) if heads else w
        if w.ndim == 1:
            tensors[name], stored[name] = w, w
            continue
        if qtype in FLOAT_TYPES:
            raw = float_bytes(file_w, qtype)
        else:
            raw = gguf.quants.quantize(file_w, gguf.GGMLQuantizationType(int(qtype)))
        tensors[name] = (qtype, raw)
        back = decode(raw, qtype, w.shape)
        stored[name] = unpermute_qk(back, heads) if heads else back
    write_gguf_tensors(path, config, tensors, metadata=metadata)
    return stored


def write_random_gguf(
    path: Path, config: SynthConfig, qtype: GGMLType, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """GGUF whose matrices are random valid `qtype` blocks (every bit pattern, see support/quantdata.py), norms F32.
    Returns the weights as gguf-py dequantizes them, in reference order."""
    tensors = random_tensors(config, qtype, rng)
    stored = {}
    for name, t in tensors.items():
        if isinstance(t, np.ndarray):
            stored[name] = t
            continue
        values = decode(t[1], qtype, config.shapes()[name])
        heads = _qk_heads(name, config)
        stored[name] = unpermute_qk(values, heads) if heads else values
    write_gguf_tensors(path, config, tensors)
    return stored


def random_tensors(config: SynthConfig, qtype: GGMLType,
                   rng: np.random.Generator) -> dict[str, np.ndarray | tuple[GGMLType, np.ndarray]]:
    """`write_gguf_tensors`'s input for a random model: every matrix random valid `qtype` blocks whose values have
    a standard deviation near 1/sqrt(fan-in) (1 for the embedding), norms F32 near 1. Nothing is dequantized, so
    it serves models of gigabytes too."""
    tensors: dict[str, np.ndarray | tuple[GGMLType, np.ndarray]] = {}
    for name, shape in config.shapes().items():
        if len(shape) == 1:
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (qtype, random_blocks(qtype, shape[0], shape[1], rng, _scale(name, shape)))
    return tensors


# -- llama2.c ---------------------------------------------------------------------------------------------------


def write_llama2c(path: Path, config: SynthConfig, weights: dict[str, np.ndarray]) -> Path:
    """llama2.c's legacy (version 0) export of reference-order float32 weights; a negative vocab_size marks an
    unshared classifier, stored last."""
    c = config
    vocab = c.vocab if c.tied else -c.vocab

    def stack(part: str) -> np.ndarray:
        layers = []
        for i in range(c.n_layers):
            name = f"blk.{i}.{part}.weight"
            heads = _qk_heads(name, c)
            layers.append(permute_qk(weights[name], heads) if heads else weights[name])
        return np.stack(layers)

    inv_freq = 1.0 / c.rope_base ** (np.arange(0, c.head_dim, 2) / c.head_dim)
    angles = np.outer(np.arange(c.seq_len), inv_freq)
    parts = [weights["token_embd.weight"]]
    parts += [stack(p) for p in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm")]
    parts += [stack(p) for p in ("ffn_gate", "ffn_down", "ffn_up")]
    parts += [weights["output_norm.weight"], np.cos(angles), np.sin(angles)]
    if not c.tied:
        parts.append(weights["output.weight"])
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", c.dim, c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.seq_len))
        for p in parts:
            f.write(np.ascontiguousarray(p, dtype="<f4").tobytes())
    return path


def write_llama2c_tokenizer(path: Path, pieces: list[bytes], scores: list[float] | None = None) -> Path:
    """llama2.c's tokenizer.bin: int32 max token length, then per token float32 score, int32 length, bytes."""
    scores = scores if scores is not None else [float(-i) for i in range(len(pieces))]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for piece, score in zip(pieces, scores, strict=True):
            f.write(struct.pack("<fi", score, len(piece)) + piece)
    return path


def byte_vocab(size: int) -> list[bytes]:
    """A vocabulary of `size` pieces: <unk>, <s>, </s>, the 256 byte pieces, then a few words."""
    pieces = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    pieces += [f" w{i}".encode() for i in range(max(0, size - len(pieces)))]
    return pieces[:size]


# -- SafeTensors ------------------------------------------------------------------------------------------------

_ST_DTYPES = {GGMLType.F32: ("float32", "<f4"), GGMLType.F16: ("float16", "<f2"), GGMLType.BF16: ("bfloat16", None)}


def hf_name(name: str) -> str:
    """Canonical name -> Hugging Face Llama name."""
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    _, layer, part, _ = name.split(".")
    return f"model.layers.{layer}.{HF_LAYER_NAMES[part]}.weight"


def hf_llama_config(config: SynthConfig) -> dict[str, Any]:
    """config.json as older transformers versions write it for LlamaForCausalLM (rope_theta at the top)."""
    c = config
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
        "intermediate_size": c.hidden, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim, "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_base, "rope_scaling": None, "vocab_size": c.vocab, "max_position_embeddings": c.seq_len,
        "tie_word_embeddings": c.tied, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def write_safetensors_file(path: Path, tensors: dict[str, np.ndarray], qtype: GGMLType) -> Path:
    """One .safetensors file of float32 `tensors` (any names) encoded as F32, F16 or BF16, with the safetensors
    package's serializer."""
    import safetensors

    st_dtype, np_dtype = _ST_DTYPES[qtype]
    keep = []
    specs = {}
    for name, w in tensors.items():
        data = float_bytes(w.reshape(1, -1), qtype) if np_dtype is None else np.ascontiguousarray(w, dtype=np_dtype)
        data = np.ascontiguousarray(data)
        keep.append(data)
        specs[name] = safetensors.TensorSpec(
            dtype=st_dtype, shape=list(w.shape), data_ptr=data.ctypes.data, data_len=data.nbytes
        )
    safetensors.serialize_file(specs, str(path), metadata={"format": "pt"})
    del keep
    return path


def write_safetensors(
    directory: Path, config: SynthConfig, weights: dict[str, np.ndarray], qtype: GGMLType = GGMLType.F32,
    shards: int = 1, hf_config: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """A Hugging Face Llama checkpoint directory: config.json and one `model.safetensors`, or `shards` files and
    model.safetensors.index.json. Every tensor (norms included) is stored as `qtype`. Returns the weights as
    stored."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config or hf_llama_config(config), indent=2))
    stored = {name: decode(float_bytes(w.reshape(1, -1), qtype), qtype, w.shape) for name, w in weights.items()}
    named = {hf_name(name): w for name, w in weights.items()}
    if shards == 1:
        write_safetensors_file(directory / "model.safetensors", named, qtype)
        return stored
    names = list(named)
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = names[k::shards]
        write_safetensors_file(directory / file, {n: named[n] for n in part}, qtype)
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {"total_size": sum(w.size for w in stored.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return stored


# -- Hugging Face references ------------------------------------------------------------------------------------


def hf_llama(config: SynthConfig, weights: dict[str, np.ndarray], rope_scaling: dict[str, Any] | None = None):
    """transformers' LlamaForCausalLM (float32, eager attention) holding reference-order `weights`; `rope_scaling`
    as config.json's (e.g. {"rope_type": "llama3", ...})."""
    import torch
    import transformers

    c = config
    hf_config = transformers.LlamaConfig(
        vocab_size=c.vocab, hidden_size=c.dim, intermediate_size=c.hidden, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim,
        rms_norm_eps=c.norm_eps, rope_theta=c.rope_base, max_position_embeddings=c.seq_len,
        tie_word_embeddings=c.tied, attn_implementation="eager",
        rope_scaling=dict(rope_scaling) if rope_scaling else None,  # a copy: transformers adds keys to it
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_config).float().eval()
    load_state(model, {hf_name(name): w for name, w in weights.items()})
    if c.tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def load_state(model, state: dict[str, np.ndarray]) -> None:
    """Copy float arrays into a torch model's parameters by name; every parameter must be given (tied ones once)."""
    import torch

    params = dict(model.named_parameters())  # tied parameters appear once
    assert set(state) == set(params), (sorted(set(state) ^ set(params)))
    with torch.no_grad():
        for name, w in state.items():
            assert tuple(params[name].shape) == w.shape, name
            params[name].copy_(torch.from_numpy(np.array(w, dtype=np.float32)))


def hf_logits(model, tokens: list[int]) -> np.ndarray:
    """Logits (len(tokens), vocab) of one forward pass over the whole sequence, without a cache."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()
