"""Every model format x tensor type against Hugging Face transformers on the same weights, and format errors.

Each test writes a small random Llama (or Gemma 3) with tests/support/synthetic.py, runs it through netboot (a prompt in
one pass, then greedy decode steps through the KV cache), and compares the full-vocabulary logits of every
position, and the greedy tokens, with transformers' eager float32 model built from the weights as the file stores
them (dequantized by gguf-py, not by netboot).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.synthetic import (
    FLOAT_TYPES,
    SMALL,
    SynthConfig,
    byte_vocab,
    config_for,
    hf_llama,
    hf_llama_config,
    hf_logits,
    hf_name,
    llama3_rope_factors,
    load_state,
    random_weights,
    write_gguf,
    write_gguf_tensors,
    write_llama2c,
    write_llama2c_tokenizer,
    write_random_gguf,
    write_safetensors,
    write_safetensors_file,
)

from netboot.errors import FormatError, NetbootError, UnsupportedError
from netboot.formats import ModelFile, open_model
from netboot.formats.gguf import read_gguf
from netboot.model.transformer import Model
from netboot.placement.resident import ResidentWeights
from netboot.tensors.ggml import GGMLType

pytest.importorskip("torch")
pytest.importorskip("transformers")

GGUF_TYPES = [GGMLType[n] for n in "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K".split()]
PROMPT_LEN, DECODE_STEPS = 6, 4
# max |netboot - reference| over all logits, relative to the largest reference logit (observed: about 5e-7).
REL_TOL = 2e-5


def run_netboot(file: ModelFile, seed: int = 0, prompt_len: int = PROMPT_LEN) -> tuple[list[int], np.ndarray]:
    """Prompt in one pass, then DECODE_STEPS greedy tokens one at a time through the KV cache.
    Returns the tokens (prompt + generated) and the logits of every position, (len(tokens), vocab)."""
    model = Model(file.config, ResidentWeights(file.tensors))
    cache = model.new_cache()
    prompt = [int(t) for t in np.random.default_rng(seed).integers(0, file.config.vocab_size, prompt_len)]
    h = model.run_layers(model.embed(prompt), 0, file.config.n_layers, cache, 0)
    rows = [model.logits(h)]
    tokens = list(prompt)
    for _ in range(DECODE_STEPS):
        tokens.append(int(np.argmax(rows[-1][-1])))
        rows.append(model.forward([tokens[-1]], cache, len(tokens) - 1)[None])
    assert cache.length == len(tokens)
    return tokens, np.concatenate(rows)


def check_against(reference, file: ModelFile, prompt_len: int = PROMPT_LEN) -> float:
    """Compare netboot's logits and greedy tokens with the torch model `reference`; returns the relative error."""
    tokens, logits = run_netboot(file, prompt_len=prompt_len)
    ref = hf_logits(reference, tokens)
    assert logits.shape == ref.shape == (len(tokens), file.config.vocab_size)
    scale = float(np.abs(ref).max())
    err = float(np.abs(logits - ref).max()) / scale
    assert err < REL_TOL, f"max |logit error| {err * scale:.3g} at logit scale {scale:.3g}"
    greedy = [int(np.argmax(ref[i])) for i in range(prompt_len - 1, len(tokens) - 1)]
    assert greedy == tokens[prompt_len:]
    return err


def assert_views_of_file(file: ModelFile, path: Path, skip: tuple[str, ...] = ()) -> None:
    """Every tensor is a read-only view of the mapped file holding exactly the file's bytes at its offset."""
    with open(path, "rb") as f:
        blob = f.read()
    for name, t in file.tensors.items():
        if name.split(".")[-2] in skip:
            continue
        assert not t.data.flags.owndata and not t.data.flags.writeable, name
        assert blob[t.offset : t.offset + t.nbytes] == t.data.tobytes(), name


def one_line_error(exc_info, path: Path) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and path.name in msg, msg
    return msg


def save_pretrained(model, directory: Path, dtype: str):
    """Save a float32 torch model with its parameters in `dtype`; return it holding the saved values. (Converting
    the model itself to bfloat16 and back would also round its RoPE frequency buffer.)"""
    import copy

    import torch

    saved = copy.deepcopy(model).to(getattr(torch, dtype))
    saved.save_pretrained(directory)
    load_state(model, {name: p.detach().float().numpy() for name, p in saved.named_parameters()})
    return model


# -- GGUF -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", GGUF_TYPES, ids=lambda t: t.name)
def test_gguf_matches_transformers(tmp_path, qtype):
    config = config_for(qtype)
    path = tmp_path / "model.gguf"
    weights = write_random_gguf(path, config, qtype, np.random.default_rng([1, int(qtype)]))
    file = open_model(path)
    assert file.format == "gguf" and file.config.rope_style == "interleaved"
    assert file.tensors["blk.0.attn_q.weight"].qtype == qtype
    assert (file.config.n_heads, file.config.n_kv_heads, file.config.vocab_size) == (4, 2, config.vocab)
    assert_views_of_file(file, path)
    check_against(hf_llama(config, weights), file)


def test_gguf_tied_output(tmp_path):
    config = replace(SMALL, tied=True)
    path = tmp_path / "tied.gguf"
    weights = write_random_gguf(path, config, GGMLType.Q8_0, np.random.default_rng(2))
    file = open_model(path)
    assert "output.weight" not in file.tensors
    check_against(hf_llama(config, weights), file)


# -- llama2.c ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False], ids=["shared", "unshared"])
def test_llama2c_matches_transformers(tmp_path, tied):
    config = replace(SMALL, tied=tied)
    weights = random_weights(config, np.random.default_rng(3))
    path = write_llama2c(tmp_path / "model.bin", config, weights)
    file = open_model(path)
    c = file.config
    assert file.format == "llama2c" and c.rope_style == "interleaved" and c.arch == "llama"
    assert (c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.context_length) == (
        64, 192, 2, 4, 2, 300, 128)
    assert ("output.weight" in file.tensors) == (not tied)
    assert all(t.qtype == GGMLType.F32 for t in file.tensors.values())
    assert_views_of_file(file, path)
    check_against(hf_llama(config, weights), file)


def test_llama2c_tokenizer_beside_or_given(tmp_path):
    config = replace(SMALL, tied=True)
    path = write_llama2c(tmp_path / "model.bin", config, random_weights(config, np.random.default_rng(4)))
    assert open_model(path).tokenizer_loader is None
    with pytest.raises(NetbootError, match="no tokenizer"):
        _ = open_model(path).tokenizer
    write_llama2c_tokenizer(tmp_path / "tokenizer.bin", byte_vocab(config.vocab))
    assert open_model(path).tokenizer.vocab_size == config.vocab
    other = tmp_path / "sub"
    other.mkdir()
    given = write_llama2c_tokenizer(other / "tok.bin", byte_vocab(config.vocab))
    assert open_model(path, tokenizer=given).tokenizer.vocab_size == config.vocab
    with pytest.raises(NetbootError, match="tokenizer not found"):
        open_model(path, tokenizer=tmp_path / "missing.bin")


# -- SafeTensors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", FLOAT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("layout", ["file", "directory", "shards"])
def test_safetensors_matches_transformers(tmp_path, qtype, layout):
    config = replace(SMALL, tied=layout == "directory")
    weights = random_weights(config, np.random.default_rng([5, int(qtype)]))
    directory = tmp_path / "hf"
    stored = write_safetensors(directory, config, weights, qtype, shards=3 if layout == "shards" else 1)
    path = directory / "model.safetensors" if layout == "file" else directory
    file = open_model(path)
    assert file.format == "safetensors" and file.config.rope_style == "halves"
    assert all(t.qtype == qtype for t in file.tensors.values())
    assert ("output.weight" in file.tensors) == (not config.tied)
    if layout != "shards":
        assert_views_of_file(file, directory / "model.safetensors")
    check_against(hf_llama(config, stored), file)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_safetensors_saved_by_transformers(tmp_path, dtype):
    """A checkpoint written by transformers' save_pretrained (its own config.json layout), tied and GQA."""
    config = replace(SMALL, tied=True, rope_base=5000.0)
    model = hf_llama(config, random_weights(config, np.random.default_rng(6)))
    reference = save_pretrained(model, tmp_path / "hf", dtype)
    file = open_model(tmp_path / "hf")
    assert file.config.rope_base == 5000.0 and file.config.head_dim == 16
    check_against(reference, file)


def test_safetensors_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = replace(SMALL, tied=True)
    write_safetensors(tmp_path, config, random_weights(config, np.random.default_rng(7)))
    assert open_model(tmp_path).tokenizer_loader is None
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    tokenizer = open_model(tmp_path).tokenizer
    assert tokenizer.vocab_size == 5 and tokenizer.eos_id == 2


# -- Gemma 3 from SafeTensors -----------------------------------------------------------------------------------


def gemma3_config(**changes) -> dict:
    base = dict(
        vocab_size=300, hidden_size=64, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=128, sliding_window=4,
        query_pre_attn_scalar=24, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_scaling={"rope_type": "linear", "factor": 2.0}, rope_theta=100000.0, rope_local_base_freq=1000.0,
    )
    return {**base, **changes}


def hf_gemma3(hf_config: dict, seed: int):
    """transformers' Gemma3ForCausalLM (float32, eager) with random weights: norm weights w ~ 0.1 N(0, 1)."""
    import transformers

    config = transformers.Gemma3TextConfig(**hf_config, attn_implementation="eager")
    model = transformers.Gemma3ForCausalLM(config).float().eval()
    rng = np.random.default_rng(seed)
    state = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if len(shape) == 1:
            state[name] = 0.1 * rng.standard_normal(shape)
        elif "embed_tokens" in name:
            state[name] = rng.standard_normal(shape) / math.sqrt(shape[1])  # times sqrt(hidden) at lookup
        else:
            state[name] = rng.standard_normal(shape) / math.sqrt(shape[1])
    load_state(model, state)
    return model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gemma3_safetensors_matches_transformers(tmp_path, dtype):
    reference = save_pretrained(hf_gemma3(gemma3_config(), seed=8), tmp_path / "gemma", dtype)
    file = open_model(tmp_path / "gemma")
    c = file.config
    assert (c.arch, c.rope_style, c.activation) == ("gemma3", "halves", "gelu_tanh") and c.qk_norm and c.post_norms
    assert c.sliding_layers == [True, False, True] and c.sliding_window == 4
    assert (c.rope_base, c.rope_base_local, c.rope_scale) == (100000.0, 1000.0, 2.0)
    assert math.isclose(c.scale, 24**-0.5) and math.isclose(c.embed_scale, 8.0)
    norms = ("attn_norm", "ffn_norm", "post_ffw_norm", "post_attention_norm", "attn_q_norm", "attn_k_norm",
             "output_norm")
    assert_views_of_file(file, tmp_path / "gemma" / "model.safetensors", skip=norms)
    derived = file.metadata["netboot.derived_tensors"]
    assert len(derived) == 1 + 3 * 6 and all(name.split(".")[-2] in norms for name in derived)
    check_against(reference, file)


def test_gemma3_older_config_layout(tmp_path):
    """config.json keys as transformers 4.x wrote them: rope_theta, rope_local_base_freq, rope_scaling and
    sliding_window_pattern instead of rope_parameters and layer_types."""
    hf_config = gemma3_config(num_hidden_layers=2, layer_types=None, sliding_window_pattern=2)
    model = hf_gemma3(hf_config, seed=9)
    state = {name: p.detach().numpy() for name, p in model.named_parameters()}
    write_safetensors_file(tmp_path / "model.safetensors", state, GGMLType.F32)
    old = {k: v for k, v in hf_config.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"], **old}))
    file = open_model(tmp_path)
    assert file.config.sliding_layers == [True, False] and file.config.rope_scale == 2.0
    check_against(model, file)


# -- Llama 3.1 RoPE scaling ("llama3") -------------------------------------------------------------------------

# head_dim 16 at base 10000 (5000): wavelengths 2 pi * base^(i / 8) = 6.3, 20 (19), 63 (56), 199 (167), ... positions.
# With an original context of 64, frequency 0 (under 64 / 4) is kept, 1 and 2 are blended, the rest (over 64 / 1)
# divided by 8.
LLAMA3_SCALING = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
LLAMA3_PROMPT_LEN = 40  # prompt and decode steps run to position 43


def check_llama3(reference, file: ModelFile, expected: np.ndarray) -> float:
    """The file's factors are `expected` (kept, blended and fully scaled frequencies all present), netboot matches
    `reference` over a long prompt and decode steps, and would not without the factors."""
    factors = np.array(file.config.rope_freq_factors)
    np.testing.assert_allclose(factors, expected, rtol=1e-6)
    factor = LLAMA3_SCALING["factor"]
    assert factors.shape == (file.config.head_dim // 2,)
    assert np.any(factors == 1.0) and np.any(factors == factor)
    assert np.any((factors > 1.0) & (factors < factor))
    err = check_against(reference, file, prompt_len=LLAMA3_PROMPT_LEN)
    unscaled = dataclasses.replace(file, config=replace(file.config, rope_freq_factors=None))
    tokens, logits = run_netboot(unscaled, prompt_len=LLAMA3_PROMPT_LEN)
    ref = hf_logits(reference, tokens)
    assert np.abs(logits - ref).max() / np.abs(ref).max() > 1000 * REL_TOL  # the test sees the scaling
    return err


@pytest.mark.parametrize("qtype", [GGMLType.F32, GGMLType.Q8_0], ids=lambda t: t.name)
def test_gguf_llama3_rope_scaling(tmp_path, qtype):
    config = SMALL
    factors = llama3_rope_factors(config, LLAMA3_SCALING)
    weights = random_weights(config, np.random.default_rng([15, int(qtype)]))
    path = tmp_path / "llama31.gguf"
    stored = write_gguf(path, config, {**weights, "rope_freqs.weight": factors}, qtype)
    del stored["rope_freqs.weight"]
    file = open_model(path)
    assert file.tensors["rope_freqs.weight"].shape == (config.head_dim // 2,)
    check_llama3(hf_llama(config, stored, LLAMA3_SCALING), file, factors)


@pytest.mark.parametrize("layout", ["rope_scaling", "save_pretrained"])
def test_safetensors_llama3_rope_scaling(tmp_path, layout):
    """config.json as Llama 3.1 ships it (rope_scaling beside rope_theta), and as transformers' save_pretrained
    writes it now (rope_parameters)."""
    config = replace(SMALL, rope_base=5000.0)
    weights = random_weights(config, np.random.default_rng(16))
    if layout == "rope_scaling":
        stored = write_safetensors(tmp_path, config, weights,
                                   hf_config={**hf_llama_config(config), "rope_scaling": LLAMA3_SCALING})
        reference = hf_llama(config, stored, LLAMA3_SCALING)
    else:
        reference = save_pretrained(hf_llama(config, weights, LLAMA3_SCALING), tmp_path, "float32")
    file = open_model(tmp_path)
    assert file.config.rope_base == 5000.0 and file.config.rope_scale == 1.0
    check_llama3(reference, file, llama3_rope_factors(config, LLAMA3_SCALING))


# -- errors -----------------------------------------------------------------------------------------------------


@pytest.fixture
def small_bin(tmp_path) -> Path:
    config = replace(SMALL, tied=False)
    return write_llama2c(tmp_path / "model.bin", config, random_weights(config, np.random.default_rng(10)))


@pytest.mark.parametrize("keep", [0, 10, 28, 1000, -4])
def test_llama2c_truncated(small_bin, keep):
    data = small_bin.read_bytes()
    small_bin.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(FormatError) as exc:
        open_model(small_bin)
    assert "truncated" in one_line_error(exc, small_bin) or "too short" in str(exc.value)


@pytest.mark.parametrize(
    "header, what",
    [
        ((0, 192, 2, 4, 2, 300, 128), "dim must be positive"),
        ((64, 192, -2, 4, 2, 300, 128), "n_layers must be positive"),
        ((64, 192, 2, 5, 5, 300, 128), "multiple of n_heads"),
        ((64, 192, 2, 4, 3, 300, 128), "multiple of n_kv_heads"),
        ((64, 192, 2, 4, 8, 300, 128), "multiple of n_kv_heads"),
        ((64, 192, 2, 4, 2, 0, 128), "vocab_size is zero"),
        ((64, 192, 2, 4, 2, 300, 0), "seq_len must be positive"),
        ((2**30, 2**30, 2**30, 1, 1, 2**30, 2**30), "truncated"),
    ],
)
def test_llama2c_bad_header(small_bin, header, what):
    data = small_bin.read_bytes()
    small_bin.write_bytes(struct.pack("<7i", *header) + data[28:])
    with pytest.raises(FormatError, match=what) as exc:
        open_model(small_bin)
    one_line_error(exc, small_bin)


def test_llama2c_versioned_export_is_named(small_bin):
    data = small_bin.read_bytes()
    small_bin.write_bytes(struct.pack("<Ii", 0x616B3432, 2) + data)
    with pytest.raises(UnsupportedError, match="version 2") as exc:
        open_model(small_bin)
    one_line_error(exc, small_bin)


@pytest.fixture
def small_gguf(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    write_random_gguf(path, SMALL, GGMLType.Q8_0, np.random.default_rng(11))
    return path


def test_gguf_bad_magic(small_gguf):
    data = small_gguf.read_bytes()
    small_gguf.write_bytes(b"GGUX" + data[4:])
    with pytest.raises(FormatError) as exc:
        open_model(small_gguf)
    one_line_error(exc, small_gguf)


def test_gguf_bad_magic_is_a_netboot_error(small_gguf):
    data = small_gguf.read_bytes()
    small_gguf.write_bytes(b"GGUX" + data[4:])
    with pytest.raises(NetbootError) as exc:
        open_model(small_gguf)
    one_line_error(exc, small_gguf)


@pytest.mark.parametrize("where", ["counts", "metadata", "tensor index", "tensor data", "last byte"])
def test_gguf_truncated(small_gguf, where):
    import gguf

    data = small_gguf.read_bytes()
    info_start = data.index(b"token_embd.weight") - 8
    data_end = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(small_gguf).tensors)  # before the padding
    cut = {"counts": 12, "metadata": 40, "tensor index": info_start + 10, "tensor data": len(data) // 2,
           "last byte": data_end - 1}[where]
    small_gguf.write_bytes(data[:cut])
    with pytest.raises(FormatError) as exc:
        open_model(small_gguf)
    one_line_error(exc, small_gguf)


def test_gguf_tensor_offset_past_end(small_gguf):
    data = bytearray(small_gguf.read_bytes())
    name = b"blk.1.ffn_down.weight"
    pos = data.index(name) + len(name)  # then n_dims u32, dims u64 x n_dims, type u32, offset u64
    (n_dims,) = struct.unpack_from("<I", data, pos)
    struct.pack_into("<Q", data, pos + 4 + 8 * n_dims + 4, 1 << 40)
    small_gguf.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="blk.1.ffn_down.weight") as exc:
        open_model(small_gguf)
    one_line_error(exc, small_gguf)


def test_gguf_tensor_without_dimensions_is_one_element(tmp_path):
    path = tmp_path / "scalar.gguf"
    tensors = {"token_embd.weight": np.zeros((300, 64), np.float32), "scalar": np.array(1.0, np.float32)}
    write_gguf_tensors(path, SMALL, tensors)
    _, read, _ = read_gguf(path)
    assert read["scalar"].shape == (1,)
    with pytest.raises(FormatError, match="tensor output_norm.weight is missing") as exc:
        open_model(path)
    one_line_error(exc, path)


def test_gguf_unsupported_architecture(tmp_path):
    path = tmp_path / "mamba.gguf"
    write_gguf_tensors(path, SMALL, {"token_embd.weight": np.zeros((300, 64), np.float32)}, arch="mamba")
    with pytest.raises(UnsupportedError, match="'mamba'") as exc:
        open_model(path)
    one_line_error(exc, path)


def test_gguf_unsupported_tensor_type(tmp_path):
    path = tmp_path / "q2k.gguf"
    raw = np.random.default_rng(12).integers(0, 256, (300, 84), dtype=np.uint8)  # one Q2_K block per row
    write_gguf_tensors(path, SMALL, {"token_embd.weight": (GGMLType.Q2_K, raw)})
    with pytest.raises(UnsupportedError, match="Q2_K") as exc:
        open_model(path)
    one_line_error(exc, path)


@pytest.mark.parametrize("values", [np.ones(5, np.float32), np.array([1, 2, 0, 8, 8, 8, 8, 8], np.float32)],
                         ids=["length", "zero"])
def test_gguf_bad_rope_freqs(tmp_path, values):
    path = tmp_path / "freqs.gguf"
    write_gguf_tensors(path, SMALL, {"token_embd.weight": np.zeros((300, 64), np.float32), "rope_freqs.weight": values})
    with pytest.raises(FormatError, match="rope_freqs.weight") as exc:
        open_model(path)
    one_line_error(exc, path)


@pytest.fixture
def small_hf(tmp_path) -> Path:
    config = replace(SMALL, tied=True)
    write_safetensors(tmp_path / "hf", config, random_weights(config, np.random.default_rng(13)))
    return tmp_path / "hf"


def test_safetensors_unsupported_architecture(small_hf):
    config = json.loads((small_hf / "config.json").read_text())
    (small_hf / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(UnsupportedError, match="Qwen2ForCausalLM") as exc:
        open_model(small_hf)
    one_line_error(exc, small_hf / "config.json")


def test_safetensors_unsupported_dtype(tmp_path):
    config = SynthConfig(tied=True)
    weights = {k: v.astype(np.float64) for k, v in random_weights(config, np.random.default_rng(14)).items()}
    import safetensors.numpy

    safetensors.numpy.save_file({hf_name(k): v for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hf_llama_config(config)))
    with pytest.raises(UnsupportedError, match="F64") as exc:
        open_model(tmp_path)
    one_line_error(exc, tmp_path / "model.safetensors")


@pytest.mark.parametrize(
    "rope_scaling, error, what",
    [
        ({"rope_type": "yarn", "factor": 4.0}, UnsupportedError, "'yarn'"),
        ({**LLAMA3_SCALING, "original_max_position_embeddings": None}, FormatError, "original_max_position_embeddings"),
        ({**LLAMA3_SCALING, "high_freq_factor": 1.0}, FormatError, "low_freq_factor < high_freq_factor"),
    ],
)
def test_safetensors_bad_rope_scaling(small_hf, rope_scaling, error, what):
    config = json.loads((small_hf / "config.json").read_text())
    (small_hf / "config.json").write_text(json.dumps({**config, "rope_scaling": rope_scaling}))
    with pytest.raises(error, match=what) as exc:
        open_model(small_hf)
    one_line_error(exc, small_hf / "config.json")


def test_gemma3_llama3_rope_scaling_is_refused(tmp_path):
    hf_config = gemma3_config(num_hidden_layers=2, layer_types=None, sliding_window_pattern=2)
    model = hf_gemma3(hf_config, seed=17)
    write_safetensors_file(tmp_path / "model.safetensors",
                           {name: p.detach().numpy() for name, p in model.named_parameters()}, GGMLType.F32)
    old = {k: v for k, v in hf_config.items() if v is not None}
    config = {"architectures": ["Gemma3ForCausalLM"], **old, "rope_scaling": LLAMA3_SCALING}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedError, match="llama3") as exc:
        open_model(tmp_path)
    one_line_error(exc, tmp_path / "config.json")


def test_safetensors_missing_config(small_hf):
    (small_hf / "config.json").unlink()
    with pytest.raises(FormatError, match="config.json") as exc:
        open_model(small_hf)
    one_line_error(exc, small_hf)


@pytest.mark.parametrize("keep", [4, 100, -1])
def test_safetensors_truncated(small_hf, keep):
    path = small_hf / "model.safetensors"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(FormatError) as exc:
        open_model(path)
    one_line_error(exc, path)


def test_safetensors_shape_disagrees_with_config(small_hf):
    config = json.loads((small_hf / "config.json").read_text())
    (small_hf / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    with pytest.raises(FormatError, match="ffn_gate") as exc:
        open_model(small_hf)
    one_line_error(exc, small_hf)


def test_safetensors_untied_without_lm_head(small_hf):
    config = json.loads((small_hf / "config.json").read_text())
    (small_hf / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(FormatError, match="lm_head") as exc:
        open_model(small_hf)
    one_line_error(exc, small_hf)
