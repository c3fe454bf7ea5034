"""Numerical faults: weights whose bytes decode to NaN or inf end a generation with one clear error naming the likely
cause (never a ZeroDivisionError from a kernel, a NaN probability, or tokens sampled from garbage), and sampling
stays finite at extreme temperatures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.synthetic import (
    SMALL,
    byte_vocab,
    random_weights,
    write_llama2c,
    write_llama2c_tokenizer,
    write_random_gguf,
)

import netboot
from netboot.engine.generate import Generation
from netboot.engine.sampling import Sampler, SamplingParams
from netboot.errors import FormatError
from netboot.formats import open_model
from netboot.model.transformer import Model
from netboot.placement.resident import ResidentWeights
from netboot.tensors.ggml import GGMLType

CORRUPT = "its weights are likely corrupt"


def llama2c(tmp_path: Path, spoil=None) -> Path:
    """A small llama2.c model with its tokenizer.bin beside it; `spoil(weights)` corrupts the weights first."""
    weights = random_weights(SMALL, np.random.default_rng(5))
    if spoil:
        spoil(weights)
    write_llama2c_tokenizer(tmp_path / "tokenizer.bin", byte_vocab(SMALL.vocab))
    return write_llama2c(tmp_path / "model.bin", SMALL, weights)


def nan_in_a_layer(w):
    w["blk.0.attn_q.weight"][3, 5] = np.nan


def nan_output_row(w):
    w["output.weight"][7, :] = np.nan


def inf_in_output(w):
    w["output.weight"][7, 3] = np.inf


@pytest.mark.parametrize("spoil", [nan_in_a_layer, nan_output_row, inf_in_output], ids=lambda f: f.__name__)
@pytest.mark.parametrize("temperature", ["0", "0.8"])
def test_corrupt_weights_end_in_one_line(tmp_path, spoil, temperature):
    path = llama2c(tmp_path, spoil)
    result = subprocess.run([sys.executable, "-m", "netboot", "run", str(path), "-p", "hi", "-n", "3",
                             "--temperature", temperature], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netboot: error: the model produced ") and CORRUPT in lines[0]
    assert result.stdout == ""


def test_corruption_met_while_decoding_names_its_position(tmp_path):
    clean = netboot.load(llama2c(tmp_path))
    prompt = clean.tokenizer.encode("hello")
    first = Generation(clean.model, clean.tokenizer, prompt, max_tokens=1, params=SamplingParams(temperature=0))
    first.text()
    [token] = first.tokens

    def spoil(w):
        w["token_embd.weight"][token, :] = np.nan  # only the generated token meets it

    spoiled = netboot.load(llama2c(tmp_path, spoil))
    gen = Generation(spoiled.model, spoiled.tokenizer, prompt, max_tokens=4, params=SamplingParams(temperature=0))
    with pytest.raises(FormatError, match=f"at position {len(prompt)}: {CORRUPT}"):
        gen.text()
    assert gen.tokens == [token]


class NoText:
    """A tokenizer stand-in for a model file without one: ids in, no text out."""

    class Decoder:
        def push(self, token: int) -> str:
            return ""

        def flush(self) -> str:
            return ""

    def stream_decoder(self) -> NoText.Decoder:
        return NoText.Decoder()

    def is_eog(self, token: int) -> bool:
        return False


def test_nan_block_scale_in_a_quantized_gguf(tmp_path):
    path = tmp_path / "q8.gguf"
    write_random_gguf(path, SMALL, GGMLType.Q8_0, np.random.default_rng(3))
    offset = open_model(path).tensors["blk.1.ffn_up.weight"].offset
    with open(path, "r+b") as f:
        f.seek(offset)  # the first block's scale: float16 0x7e00 is NaN
        f.write((0x7E00).to_bytes(2, "little"))
    file = open_model(path)
    model = Model(file.config, ResidentWeights(file.tensors))
    gen = Generation(model, NoText(), [1, 2, 3], max_tokens=3, params=SamplingParams(temperature=0))
    with pytest.raises(FormatError, match=CORRUPT):
        gen.text()


def test_the_check_passes_huge_finite_logits():
    # Absurd but finite logits are sampled, not refused: only NaN and inf mean corrupt weights.
    class Huge:
        config = type("Config", (), {"context_length": 16})()

        def new_cache(self):
            return None

        def forward(self, ids, cache, pos):
            out = np.zeros(8, np.float32)
            out[2] = 3e38
            return out

    gen = Generation(Huge(), NoText(), [1], max_tokens=2, params=SamplingParams(temperature=0))
    gen.text()
    assert gen.tokens == [2, 2]


@pytest.mark.parametrize("temperature", [1e-30, 1e-45, 5e-324, 1e300])
def test_extreme_temperatures_sample_without_nan(temperature):
    logits = (np.random.default_rng(0).standard_normal(1000) * 10).astype(np.float32)
    token = Sampler(SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, seed=1)).sample(logits)
    if temperature < 1:
        assert token == int(np.argmax(logits))
    else:
        assert 0 <= token < logits.size
