"""A server's catalog is input from the network: whatever JSON it holds, the client's readers of it answer (a model,
a sha256, span digests, or nothing) and never raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netboot.remote.catalog import file_sha256, find, span_hashes

URL = "http://127.0.0.1:8080/m.gguf"
SHA = "ab" * 32

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
                    st.sampled_from(["/m.gguf", "m.gguf", URL, SHA, "", "/", "../x"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
keys = st.sampled_from(["name", "url", "size", "sha256", "files", "tokenizer", "layers", "globals", "path", "file",
                        "start", "end", "xxh3_128"])
# Entries shaped like the real ones, with any value in any field.
records = st.dictionaries(keys, json_values, max_size=8)
entries = st.lists(st.dictionaries(keys, st.one_of(json_values, st.lists(records, max_size=3)), max_size=8),
                   max_size=4)


@settings(max_examples=300, deadline=None)
@given(entries)
def test_any_catalog_is_read_without_an_exception(catalog):
    model = find(catalog, URL)
    assert model is None or model.url.startswith("http://127.0.0.1:8080/")
    sha = file_sha256(catalog, URL)
    assert sha is None or (len(sha) == 64 and sha == sha.lower())
    for (start, end), (name, _digest) in span_hashes(catalog, URL).items():
        assert isinstance(start, int) and isinstance(end, int) and name in ("xxh3_128", "sha256")


def test_a_well_formed_entry_is_still_read():
    catalog = [{"url": "/m.gguf", "files": [{"path": "m.gguf", "url": "/m.gguf", "size": 10, "sha256": SHA.upper()}],
                "layers": [{"file": "m.gguf", "start": 0, "end": 4, "xxh3_128": "cd" * 16},
                           {"file": "m.gguf", "start": "0", "end": 4, "xxh3_128": "ef" * 16}]}]
    assert file_sha256(catalog, URL) == SHA
    assert span_hashes(catalog, URL) == {(0, 4): ("xxh3_128", "cd" * 16)}
