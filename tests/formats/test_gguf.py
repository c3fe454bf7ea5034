"""netboot's GGUF reader against the `gguf` package's reader (the format's reference implementation)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from netboot.formats.gguf import read_gguf


def reference_metadata(reader: gguf.GGUFReader) -> dict:
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            if field.types[1] == gguf.GGUFValueType.STRING:
                meta[key] = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
            else:
                meta[key] = np.concatenate([field.parts[i] for i in field.data])
        elif vtype == gguf.GGUFValueType.STRING:
            meta[key] = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
        else:
            meta[key] = field.parts[field.data[0]][0].item()
    return meta


@pytest.fixture(scope="module")
def reference(default_model_path):
    return gguf.GGUFReader(str(default_model_path))


@pytest.mark.slow
def test_metadata_equals_gguf_readers(default_model_path, reference):
    ours, _, _ = read_gguf(default_model_path)
    expected = reference_metadata(reference)
    assert set(expected) == {k for k in ours if not k.startswith("GGUF.")}
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(np.asarray(ours[key]), value, err_msg=key)
        elif isinstance(value, float):
            assert ours[key] == pytest.approx(value, rel=1e-7), key
        else:
            assert ours[key] == value, key
    assert len(ours["tokenizer.ggml.tokens"]) == 262144


def test_tensor_index_equals_gguf_readers(default_model_path, reference):
    _, tensors, _ = read_gguf(default_model_path)
    assert len(tensors) == len(reference.tensors) == 236
    for t in reference.tensors:
        ours = tensors[t.name]
        assert ours.offset == t.data_offset, t.name
        assert ours.nbytes == t.n_bytes, t.name
        assert ours.qtype.value == t.tensor_type.value, t.name
        assert ours.shape == tuple(int(d) for d in reversed(t.shape)), t.name
        # A view of the same bytes: compare a sample of each tensor's raw data.
        reference_bytes = np.asarray(t.data).view(np.uint8).reshape(-1)
        np.testing.assert_array_equal(ours.data.reshape(-1)[:4096], reference_bytes[:4096])


def test_tensors_are_views_of_the_file_not_copies(default_model_path):
    _, tensors, _ = read_gguf(default_model_path)
    for t in tensors.values():
        assert not t.data.flags.owndata and not t.data.flags.writeable, t.name


def test_open_costs_little_memory(default_model_path):
    import psutil

    read_gguf(default_model_path)  # warm the page cache
    process = psutil.Process()
    before = process.memory_info().rss
    metadata, _, _ = read_gguf(default_model_path)
    grown = process.memory_info().rss - before
    # gguf's reader grows RSS by ~700 MB here (its open time is compared in benchmarks/bench_gguf_open.py).
    assert grown < 80e6, grown
    assert metadata["general.architecture"] == "gemma3"
