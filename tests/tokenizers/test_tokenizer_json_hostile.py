"""tokenizer.json is read by the `tokenizers` library: whatever the file holds, netboot answers with a tokenizer or
one short `FormatError` line, never the library's own exception (or a Rust panic) and never a page of text."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netboot.errors import NetbootError
from netboot.tokenizers.hf import HFTokenizer


def valid_tokenizer_json() -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return json.loads(tok.to_str())


VALID = valid_tokenizer_json()
hostile = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
                    st.text(max_size=30), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


def paths(doc, prefix=()):
    """Every (key path) inside a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


PATHS = list(paths(VALID))


def load(tmp_path, text: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(text)
    try:
        tok = HFTokenizer.from_file(path)
        tok.encode("ab a b")
    except NetbootError as e:
        message = str(e)
        assert "\n" not in message and len(message) <= 400, message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(PATHS), value=hostile)
def test_a_hostile_value_anywhere_is_one_line_or_works(tmp_path, where, value):
    doc = json.loads(json.dumps(VALID))
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    load(tmp_path, json.dumps(doc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_are_one_line(tmp_path, data):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(data)
    with pytest.raises(NetbootError) as error:
        HFTokenizer.from_file(path)
    assert "\n" not in str(error.value) and len(str(error.value)) <= 400
