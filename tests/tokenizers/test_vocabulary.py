"""netboot.tokenizers.vocabulary: the compact text -> id index against a plain dict over the same texts."""

from __future__ import annotations

import random

import pytest

from netboot.errors import FormatError
from netboot.formats.gguf import read_gguf
from netboot.tokenizers.vocabulary import Vocabulary


def test_every_token_of_the_default_model_round_trips(default_model_path):
    metadata, _, _ = read_gguf(default_model_path)
    texts = metadata["tokenizer.ggml.tokens"]
    vocab = Vocabulary.from_texts(texts)
    expected = {t: i for i, t in enumerate(texts)}
    assert len(vocab) == len(expected) == 262144
    assert all(vocab.get(t) == i for t, i in expected.items())
    assert all(vocab[i] == t for t, i in list(expected.items())[::97])


def test_misses_and_near_misses_are_none():
    texts = ["a", "ab", "abc", "▁the", "日本", "<0x0A>"]
    vocab = Vocabulary.from_texts(texts)
    assert [vocab.get(t) for t in texts] == list(range(len(texts)))
    rng = random.Random(0)
    for _ in range(2000):
        probe = "".join(rng.choice("abc▁the日本<>0xA") for _ in range(rng.randint(0, 5)))
        assert vocab.get(probe) == (texts.index(probe) if probe in texts else None)
    assert "abc" in vocab and "abcd" not in vocab and 3 not in vocab


def test_a_hash_collision_is_resolved_by_the_bytes(monkeypatch):
    import netboot.tokenizers.vocabulary as module

    monkeypatch.setattr(module, "hash", lambda b: len(b), raising=False)  # every 2-byte text collides
    vocab = Vocabulary.from_texts(["ab", "cd", "ef", "x"])
    assert [vocab.get(t) for t in ("ab", "cd", "ef", "x", "gh", "y")] == [0, 1, 2, 3, None, None]


def test_empty_texts_are_renamed_and_duplicates_refused():
    vocab = Vocabulary.from_texts(["a", "", "b"])
    assert vocab[1] == "[EMPTY_1]" and vocab.get("") is None and vocab.get("[EMPTY_1]") == 1
    with pytest.raises(FormatError, match="duplicate entries"):
        Vocabulary.from_texts(["a", "b", "a"])
