"""Hostile input: corrupt headers and nonsense configurations are refused with one short line naming the field.

The first part holds one test per hole found by fuzzing (issue 12); the second, property tests (hypothesis): random
bytes, and valid headers with random edits, into each parser, which either parses or raises a NetbootError whose
message is one line of at most a few hundred characters.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.mutate import LLAMA2C_FIELDS, boundary_bytes, gguf_fields
from support.synthetic import (
    SMALL,
    byte_vocab,
    random_weights,
    write_gguf,
    write_llama2c,
    write_llama2c_tokenizer,
    write_safetensors,
)

from netboot.config import ModelConfig
from netboot.errors import FormatError, NetbootError, clipped
from netboot.formats import open_model
from netboot.formats.gguf import _config, parse_header, read_gguf
from netboot.formats.llama2c import open_llama2c
from netboot.formats.safetensors import read_safetensors
from netboot.tokenizers.llama2c import Llama2cTokenizer
from netboot.tokenizers.spm import SPMTokenizer

MAX_MESSAGE = 400
VOCAB = [p.decode() for p in byte_vocab(SMALL.vocab)]
TOKENIZER_META = {
    "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": VOCAB,
    "tokenizer.ggml.scores": [float(-i) for i in range(len(VOCAB))], "tokenizer.ggml.token_type": [1] * len(VOCAB),
}


def short(exc: BaseException) -> str:
    """The message, checked to be what the CLI may print: one line, not long."""
    message = str(exc)
    assert "\n" not in message and 0 < len(message) <= MAX_MESSAGE, message[:500]
    return message


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    write_gguf(path, SMALL, random_weights(SMALL, np.random.default_rng(0)), metadata=TOKENIZER_META)
    return path


@pytest.fixture(scope="module")
def small_meta(small_gguf):
    return read_gguf(small_gguf)[:2]


def patched(path: Path, out: Path, offset: int, data: bytes) -> Path:
    blob = bytearray(path.read_bytes())
    blob[offset : offset + len(data)] = data
    out.write_bytes(bytes(blob))
    return out


# -- GGUF: the configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("llama.attention.head_count", 0, "head_count is 0"),  # was ZeroDivisionError
        ("llama.block_count", 0x7FFFFFFF, "block_count is 2147483647"),  # was 77 s and 11 GB
        ("llama.block_count", 0, "block_count is 0"),
        ("llama.block_count", 1.5, "block_count must be an integer"),
        ("llama.block_count", "2", "block_count must be an integer"),
        ("llama.block_count", np.array([2, 2]), "block_count must be an integer"),
        ("llama.context_length", 0, "context_length is 0"),
        ("llama.embedding_length", 63, "does not divide the width 63"),
        ("llama.attention.head_count_kv", 3, "n_kv_heads 3 does not divide n_heads 4"),
        ("llama.attention.key_length", 15, "head_dim 15 is odd"),
        ("llama.rope.freq_base", math.inf, "freq_base is inf"),  # was OverflowError
        ("llama.rope.freq_base", math.nan, "freq_base is nan"),
        ("llama.rope.freq_base", 1e300, "rope_base"),
        ("llama.attention.layer_norm_rms_epsilon", 0.0, "norm_eps"),
        ("llama.feed_forward_length", -1, "feed_forward_length is -1"),
        ("general.architecture", "x" * 100_000, "architecture 'xxx"),
    ],
)
def test_gguf_config_is_validated(small_meta, key, value, match):
    meta, tensors = small_meta
    with pytest.raises(NetbootError, match=match) as info:
        _config(Path("m.gguf"), {**meta, key: value}, tensors)
    short(info.value)


def test_gguf_huge_block_count_is_refused_at_once(small_meta):
    meta, tensors = small_meta
    start = time.monotonic()
    with pytest.raises(FormatError):
        _config(Path("m.gguf"), {**meta, "llama.block_count": 0xFFFFFFFF}, tensors)
    assert time.monotonic() - start < 1


def test_gguf_sliding_pattern_and_tokenizer_types(small_meta):
    meta, tensors = small_meta
    bad = {**meta, "tokenizer.ggml.tokens": np.arange(300)}
    with pytest.raises(FormatError, match="not an array of strings"):
        SPMTokenizer.from_gguf_metadata(bad)
    with pytest.raises(FormatError, match="bos_token_id must be an integer"):
        SPMTokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.bos_token_id": "1"})
    with pytest.raises(FormatError, match="add_bos_token must be a boolean"):
        SPMTokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.add_bos_token": np.array([1, 0])})
    with pytest.raises(FormatError, match="scores is not an array of numbers"):
        SPMTokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.scores": "x"})


# -- GGUF: the header -------------------------------------------------------------------------------------------


def field_at(path: Path, predicate) -> int:
    """The offset of the first header field (by gguf_fields) whose current value satisfies `predicate`."""
    blob = path.read_bytes()
    fields, _ = gguf_fields(blob)
    for f in fields:
        if f.width == 8 and predicate(int.from_bytes(blob[f.offset : f.offset + 8], "little"), blob, f.offset):
            return f.offset
    raise AssertionError("no such field")


def test_gguf_string_length_past_int64(small_gguf, tmp_path):
    """A vocabulary string whose u64 length does not fit an int64 (was an OverflowError traceback)."""
    blob = small_gguf.read_bytes()
    start = blob.index(b"<unk>") - 8
    bad = patched(small_gguf, tmp_path / "m.gguf", start, boundary_bytes(2**64 - 2, 8))
    with pytest.raises(FormatError) as info:
        read_gguf(bad)
    short(info.value)


def test_gguf_array_count_is_bounded_by_the_file(small_gguf, tmp_path):
    """An array whose count claims 2^60 elements is refused before anything is allocated for it."""
    blob = small_gguf.read_bytes()
    count_at = blob.index(b"<unk>") - 16  # the string array's count precedes the first string's length
    assert int.from_bytes(blob[count_at : count_at + 8], "little") == len(VOCAB)
    bad = patched(small_gguf, tmp_path / "m.gguf", count_at, boundary_bytes(2**60, 8))
    start = time.monotonic()
    with pytest.raises(FormatError, match="array of 1152921504606846976 elements"):
        read_gguf(bad)
    assert time.monotonic() - start < 1


def gguf_bytes(kvs: list[tuple[str, int, bytes]], n_tensors: int = 0) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs))
    for key, vtype, value in kvs:
        out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", vtype) + value
    return out + bytes(64)


def test_gguf_alignment_zero_and_deep_nesting():
    with pytest.raises(FormatError, match="general.alignment is 0"):
        parse_header(memoryview(gguf_bytes([("general.alignment", 4, struct.pack("<I", 0))])), "m.gguf")
    with pytest.raises(FormatError, match="not a power of two"):
        parse_header(memoryview(gguf_bytes([("general.alignment", 4, struct.pack("<I", 24))])), "m.gguf")
    nested = struct.pack("<IQ", 9, 1) * 50 + struct.pack("<IQ", 4, 0)  # arrays of arrays, 50 deep
    with pytest.raises(FormatError, match="nested deeper"):
        parse_header(memoryview(gguf_bytes([("x", 9, nested)])), "m.gguf")


def test_gguf_tensor_name_is_clipped(small_gguf, tmp_path):
    """A tensor whose type is unknown is named in at most a few dozen characters, however long its name."""
    blob = bytearray(small_gguf.read_bytes())
    at = field_at(small_gguf, lambda v, b, o: b[o + 8 : o + 8 + v] == b"token_embd.weight")
    name_len = len(b"token_embd.weight")
    # the name's bytes become 'xxx...' and its length the whole rest of the header: the name swallows it
    blob[at + 8 : at + 8 + name_len] = b"x" * name_len
    bad = tmp_path / "m.gguf"
    bad.write_bytes(bytes(blob))
    file = None
    try:
        file = open_model(bad)
    except NetbootError as exc:
        short(exc)
    assert file is None or "token_embd.weight" not in file.tensors


# -- open_model ---------------------------------------------------------------------------------------------------


def test_fifo_is_refused_not_read(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    with pytest.raises(NetbootError, match="not a regular file"):
        open_model(fifo)


def test_tokenizer_is_refused_for_gguf(small_gguf, tmp_path):
    tok = write_llama2c_tokenizer(tmp_path / "tokenizer.bin", byte_vocab(SMALL.vocab))
    with pytest.raises(NetbootError, match="--tokenizer is not used with GGUF"):
        open_model(small_gguf, tokenizer=tok)


# -- SafeTensors and config.json ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf")
    write_safetensors(directory, SMALL, random_weights(SMALL, np.random.default_rng(1)))
    return directory


def with_config(hf_dir: Path, tmp_path: Path, **changes) -> Path:
    out = tmp_path / "hf"
    out.mkdir()
    os.symlink(hf_dir / "model.safetensors", out / "model.safetensors")
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(changes)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"hidden_size": [64]}, "hidden_size must be an integer"),  # was TypeError
        ({"num_hidden_layers": 1.5}, "num_hidden_layers must be an integer"),  # ran one of two layers
        ({"num_hidden_layers": 0}, "num_hidden_layers is 0"),
        ({"max_position_embeddings": 0}, "max_position_embeddings is 0"),
        ({"num_attention_heads": 0}, "num_attention_heads is 0"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
        ({"head_dim": 15}, "head_dim 15 is odd"),
        ({"head_dim": None, "hidden_size": 66}, "does not divide hidden_size 66"),
        ({"rope_theta": "1e4"}, "rope_theta must be a number"),
        ({"rms_norm_eps": -1.0}, "norm_eps"),
        ({"rope_scaling": [1]}, "rope_scaling must be an object"),
        ({"architectures": "LlamaForCausalLM"}, "architectures must be a list"),
        ({"architectures": [["x" * 10_000]]}, "is not supported"),
    ],
)
def test_config_json_is_validated(hf_dir, tmp_path, changes, match):
    with pytest.raises(NetbootError, match=match) as info:
        open_model(with_config(hf_dir, tmp_path, **changes))
    short(info.value)


def test_config_json_rope_theta_1e999(hf_dir, tmp_path):
    out = with_config(hf_dir, tmp_path)
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text.replace('"rope_theta": 10000.0', '"rope_theta": 1e999'))
    with pytest.raises(FormatError, match="rope_theta is inf"):
        open_model(out)


def st_file(tmp_path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 4]},  # was OverflowError
        {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": "4", "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0]},
        {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]},
        [1, 2, 3],
    ],
)
def test_safetensors_entries_are_type_checked(tmp_path, entry):
    path = st_file(tmp_path, {"w": entry}, bytes(4))
    with pytest.raises(FormatError) as info:
        read_safetensors(path)
    short(info.value)


def test_safetensors_long_names_are_clipped(tmp_path):
    path = st_file(tmp_path, {"n" * 100_000: {"dtype": "X" * 100_000, "shape": [1], "data_offsets": [0, 4]}})
    with pytest.raises(FormatError, match="unknown dtype") as info:
        read_safetensors(path)
    short(info.value)


def test_safetensors_deep_json_is_an_error(tmp_path):
    path = tmp_path / "model.safetensors"
    text = b"[" * 100_000
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(FormatError, match="not valid JSON"):
        read_safetensors(path)


def test_shard_names_stay_in_the_directory(hf_dir, tmp_path):
    out = with_config(hf_dir, tmp_path)
    index = {"weight_map": {"model.embed_tokens.weight": "/etc/passwd"}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="not a shard's file name"):
        open_model(out)


# -- llama2.c -----------------------------------------------------------------------------------------------------


def test_llama2c_absurd_sizes_are_named(tmp_path):
    config = replace(SMALL, tied=True)
    path = write_llama2c(tmp_path / "model.bin", config, random_weights(config, np.random.default_rng(2)))
    bad = patched(path, tmp_path / "bad.bin", 0, struct.pack("<i", 1 << 30))  # dim
    with pytest.raises(FormatError) as info:
        open_llama2c(bad)
    short(info.value)


# -- ModelConfig.validate and clipped ------------------------------------------------------------------------------


def good_config(**changes) -> ModelConfig:
    fields = dict(arch="llama", n_layers=2, dim=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=192, vocab_size=300)
    return ModelConfig(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"n_layers": 0}, "n_layers is 0"),
        ({"n_layers": 1.5}, "n_layers must be an integer"),
        ({"context_length": 0}, "context_length is 0"),
        ({"n_kv_heads": 3}, "does not divide"),
        ({"head_dim": 15}, "odd"),
        ({"rope_base": math.inf}, "rope_base is inf"),
        ({"norm_eps": 2.0}, "norm_eps"),
        ({"rope_freq_factors": (1.0,)}, "RoPE frequency factors"),
        ({"sliding_layers": [True]}, "1 sliding-window flags for 2 layers"),
        ({"n_layers": 2**31}, "outside"),
    ],
)
def test_validate_names_the_field(changes, match):
    assert good_config().validate("m") is not None
    with pytest.raises(FormatError, match=match) as info:
        good_config(**changes).validate("m")
    short(info.value)


def test_clipped():
    assert clipped("abc") == "'abc'"
    assert len(clipped("x" * 10**7)) <= 70
    assert len(clipped(b"\xff" * 10**6)) <= 70
    assert clipped(list(range(1000))) == "<list of 1000 items>"


# -- properties ---------------------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def parses_or_refuses(fn, *args) -> None:
    try:
        fn(*args)
    except NetbootError as exc:
        short(exc)


@st.composite
def edits(draw, blob: bytes, fields: list) -> bytes:
    """A valid file with a few edits: boundary values into its fields, random bytes, a cut."""
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "byte", "cut"]))
        if kind == "field" and fields:
            f = draw(st.sampled_from(fields))
            value = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, 2**64 - 2]))
            data[f.offset : f.offset + f.width] = boundary_bytes(value, f.width)
        elif kind == "byte":
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        else:
            del data[draw(st.integers(0, len(data))) :]
            if not data:
                break
    return bytes(data)


@pytest.fixture(scope="module")
def gguf_header(small_gguf) -> tuple[bytes, list]:
    blob = small_gguf.read_bytes()
    fields, end = gguf_fields(blob)
    return blob[: end + 64], fields


@PROPERTY
@given(data=st.data())
def test_property_gguf_header(gguf_header, data):
    blob, fields = gguf_header
    mutated = data.draw(st.one_of(st.binary(max_size=512).map(lambda b: b"GGUF" + b), edits(blob, fields)))
    parses_or_refuses(parse_header, memoryview(mutated), "m.gguf", len(mutated))


@PROPERTY
@given(blob=st.binary(max_size=256))
def test_property_gguf_random_bytes(blob):
    parses_or_refuses(parse_header, memoryview(blob), "m.gguf", len(blob))


@PROPERTY
@given(data=st.data())
def test_property_gguf_config(small_meta, data):
    meta, tensors = small_meta
    keys = sorted(k for k in meta if k.startswith(("llama.", "general.")))
    key = data.draw(st.sampled_from(keys))
    value = data.draw(st.one_of(
        st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=20), st.booleans(), st.none(),
        st.lists(st.integers(0, 10), max_size=3).map(np.array),
    ))
    parses_or_refuses(_config, Path("m.gguf"), {**meta, key: value}, tensors)


@pytest.fixture(scope="module")
def st_blob(hf_dir) -> bytes:
    return (hf_dir / "model.safetensors").read_bytes()


@PROPERTY
@given(data=st.data())
def test_property_safetensors_header(st_blob, tmp_path_factory, data):
    (n,) = struct.unpack_from("<Q", st_blob)
    mutated = data.draw(st.one_of(st.binary(max_size=300), edits(st_blob[: 8 + n], [LLAMA2C_FIELDS[0]])))
    path = tmp_path_factory.getbasetemp() / "prop.safetensors"
    path.write_bytes(mutated)
    parses_or_refuses(read_safetensors, path)


@PROPERTY
@given(data=st.data())
def test_property_llama2c_header(tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp()
    path = folder / "prop.bin"
    if not (folder / "pristine.bin").exists():
        write_llama2c(folder / "pristine.bin", SMALL, random_weights(SMALL, np.random.default_rng(3)))
    blob = (folder / "pristine.bin").read_bytes()
    head = data.draw(edits(blob[:28], LLAMA2C_FIELDS))
    path.write_bytes(head + blob[28:] if len(head) == 28 else head)
    parses_or_refuses(open_llama2c, path)


@PROPERTY
@given(data=st.data())
def test_property_tokenizer_bin(tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp()
    pristine = folder / "pristine-tokenizer.bin"
    if not pristine.exists():
        write_llama2c_tokenizer(pristine, byte_vocab(300))
    blob = pristine.read_bytes()
    mutated = data.draw(st.one_of(st.binary(max_size=200), edits(blob[:2000], [LLAMA2C_FIELDS[0]])))
    path = folder / "prop-tokenizer.bin"
    path.write_bytes(mutated)
    vocab = data.draw(st.sampled_from([None, 3, 300, 2**31 - 1]))
    parses_or_refuses(Llama2cTokenizer.from_file, path, vocab)
