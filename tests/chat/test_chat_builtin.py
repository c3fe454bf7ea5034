"""Built-in chat formats against llama.cpp (tests/fixtures/chat_templates.json, from scripts/make_references.py):
the text of every format, and the token ids on the default model; family detection; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netboot.chat import BUILTINS, ChatTemplateError, ConversationRejected, builtin_format, chat_format, detect_family
from netboot.chat.builtin import render_builtin
from netboot.chat.prompt import from_override
from netboot.errors import NetbootError
from netboot.formats import open_model
from netboot.tokenizers.spm import SPMTokenizer

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates.json"
REFERENCE = json.loads(FIXTURE.read_text(encoding="utf-8"))
CASES = [pytest.param(c, id=f"{c['name']}-{'gen' if c['add_generation_prompt'] else 'nogen'}")
         for c in REFERENCE["cases"]]
END_OF_TURN_ID = 106  # <end_of_turn> in Gemma 3's vocabulary


@pytest.fixture(scope="module")
def gemma_file(default_model_path):
    return open_model(default_model_path)


def test_fixture_covers_every_builtin():
    assert sorted(REFERENCE["templates"]) == sorted(BUILTINS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_text_equals_llama_cpp(case, name):
    assert render_builtin(name, case["messages"], case["add_generation_prompt"]) == case["texts"][name]


@pytest.mark.parametrize("case", CASES)
def test_default_model_ids_equal_llama_cpp(gemma_file, case):
    fmt = chat_format(gemma_file)
    assert fmt.encode(case["messages"], case["add_generation_prompt"]) == case["ids"][REFERENCE["detected"]]


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_format_ids_on_default_vocabulary(gemma_file, name):
    fmt = builtin_format(name, gemma_file.tokenizer)
    for case in REFERENCE["cases"]:
        assert fmt.encode(case["messages"], case["add_generation_prompt"]) == case["ids"][name], case["name"]


def test_default_model_detects_gemma_and_stops_on_end_of_turn(gemma_file):
    fmt = chat_format(gemma_file)
    tok = gemma_file.tokenizer
    assert fmt.name == REFERENCE["detected"] == "gemma"
    assert "tokenizer.chat_template" not in gemma_file.metadata  # why a built-in is needed at all
    assert tok.token_piece(END_OF_TURN_ID) == "<end_of_turn>"
    assert fmt.stop_token_ids == {END_OF_TURN_ID, tok.eos_id}
    assert all(tok.is_eog(i) for i in fmt.stop_token_ids)  # llama.cpp ends generation on <end_of_turn> too


def test_one_bos(gemma_file):
    ids = chat_format(gemma_file).encode([{"role": "user", "content": "hi"}])
    assert ids[0] == gemma_file.tokenizer.bos_id and ids.count(gemma_file.tokenizer.bos_id) == 1


def _vocab(*extra: str) -> SPMTokenizer:
    tokens = ["<unk>", "<s>", "</s>", *extra, *(f"<0x{b:02X}>" for b in range(256)), "▁", "x"]
    types = [2, 3, 3, *([3] * len(extra)), *([6] * 256), 1, 1]
    return SPMTokenizer.from_gguf_metadata({
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * len(tokens), "tokenizer.ggml.token_type": types,
    })


@pytest.mark.parametrize(("arch", "extra", "expected"), [
    ("llama", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "llama3"),
    ("llama", ("<|im_start|>", "<|im_end|>"), "chatml"),
    ("llama", ("[INST]", "[/INST]"), "llama2-sys"),
    ("llama", (), "llama2-sys"),
    ("gemma3", ("<start_of_turn>", "<end_of_turn>"), "gemma"),
    ("gemma3", (), "gemma"),
    ("qwen2", (), "chatml"),
])
def test_detect_family(arch, extra, expected):
    tok = _vocab(*extra)
    assert detect_family(arch, lambda t: tok.token_id(t) is not None)[0] == expected


def test_llama3_stop_token_on_its_vocabulary():
    tok = _vocab("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    assert builtin_format("llama3", tok).stop_token_ids == {tok.token_id("<|eot_id|>"), tok.eos_id}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_unknown_role_is_refused(name):
    with pytest.raises(ConversationRejected, match=r"message 1 has role 'tool'") as info:
        render_builtin(name, [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("messages", [
    "hello", [{"content": "no role"}], [["user", "hi"]], [{"role": "user", "content": ["a", "b"]}],
    [{"role": "user"}], [{"role": "user", "content": b"bytes"}],
])
def test_bad_messages_are_refused(messages):
    with pytest.raises(ConversationRejected) as info:
        render_builtin("gemma", messages)
    assert isinstance(info.value, NetbootError) and "\n" not in str(info.value)


def test_override_by_name_file_and_text(gemma_file, tmp_path):
    tok = gemma_file.tokenizer
    assert chat_format(gemma_file, override="chatml").name == "chatml"
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}", encoding="utf-8")
    by_file = from_override(str(path), tok)
    assert (by_file.name, by_file.origin) == ("jinja", str(path))
    assert by_file.render([{"role": "user", "content": "hi"}]) == "[user]hi"
    assert from_override("{{ messages[0].content }}!", tok).render([{"role": "user", "content": "hi"}]) == "hi!"


def test_unknown_override_names_the_built_ins(gemma_file):
    with pytest.raises(NetbootError, match="expected a built-in name \\(gemma, llama2") as info:
        chat_format(gemma_file, override="mistral-v7")
    assert not isinstance(info.value, ChatTemplateError)
