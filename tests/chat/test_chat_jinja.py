"""Jinja chat templates: rendered as transformers' `apply_chat_template` renders them, one BOS when the template
writes it, the model's own template found in a GGUF and beside a SafeTensors model, bad templates as one line."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from netboot.chat import ChatTemplateError, ConversationRejected, JinjaTemplate, chat_format, jinja_format
from netboot.chat.prompt import model_template
from netboot.formats import open_model

# Real-world template texts (facts of public formats), as their models' tokenizer_config.json carry them.
CHATML_QWEN = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim -}}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""
# block tags on their own lines (trim_blocks / lstrip_blocks matter), tojson with options, loop.last, namespace,
# loopcontrols, {% generation %}, the tools/documents variables and eos_token
FEATURES = """{%- set ns = namespace(users=0) -%}
{%- for m in messages -%}
    {%- if m.role == 'user' %}{% set ns.users = ns.users + 1 %}{% endif -%}
{%- endfor -%}
users={{ ns.users }} tools={{ tools is none }} documents={{ documents is defined }}
{% for message in messages %}
    {% if loop.index > 4 %}{% break %}{% endif %}
{{ message['role'] | upper }}: {{ message['content'] | tojson }} {{ message | tojson(indent=1, sort_keys=true) }}
    {% if message.role == 'assistant' %}
{% generation %}{{ message.content }}{{ eos_token }}{% endgeneration %}
    {% endif %}
    {% if not loop.last %}
---
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}ASSISTANT:{% endif %}"""

TEMPLATES = {"chatml_qwen": CHATML_QWEN, "llama3": LLAMA3, "gemma": GEMMA, "features": FEATURES}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is 2 + 2?"}],
    "system_user": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi <b>&</b> \"q\"  "}],
    "multi": [
        {"role": "user", "content": "Count:\n1\n2"}, {"role": "assistant", "content": "3 🎉 é\n"},
        {"role": "user", "content": "日本語 <|im_end|> <end_of_turn>"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again\t"},
    ],
}
BOS, EOS = "<s>", "</s>"


@pytest.fixture(scope="module")
def transformers_render():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers.models import WordLevel

    backend = tokenizers.Tokenizer(WordLevel(vocab={"<unk>": 0, BOS: 1, EOS: 2}, unk_token="<unk>"))

    def render(template: str, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        tok = transformers.PreTrainedTokenizerFast(
            tokenizer_object=backend, chat_template=template, bos_token=BOS, eos_token=EOS
        )
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    return render


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_render_equals_transformers(transformers_render, template, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    if template == "gemma" and conversation == "system_user":
        messages = [messages[0], {"role": "user", "content": "x"}]
    ours = JinjaTemplate(TEMPLATES[template], {"bos_token": BOS, "eos_token": EOS})
    assert ours.render(messages, add_generation_prompt) == transformers_render(
        TEMPLATES[template], messages, add_generation_prompt
    )


def test_raise_exception_message_as_transformers_says_it(transformers_render):
    bad = [{"role": "assistant", "content": "I speak first"}]
    with pytest.raises(Exception, match="Conversation roles must alternate"):
        transformers_render(GEMMA, bad, True)
    with pytest.raises(ConversationRejected, match="refuses the conversation: Conversation roles must alternate"):
        JinjaTemplate(GEMMA, {"bos_token": BOS}).render(bad)


def test_strftime_now():
    before = datetime.now().strftime("%Y-%m")
    out = JinjaTemplate("{{ strftime_now('%Y-%m') }}").render([])
    assert out in {before, datetime.now().strftime("%Y-%m")}


@pytest.fixture(scope="module")
def gemma_file(default_model_path):
    return open_model(default_model_path)


def test_template_that_writes_bos_gives_one_bos(gemma_file):
    """Gemma's own template writes <bos>: the ids must equal llama.cpp's built-in gemma (tokenizer's BOS)."""
    tok = gemma_file.tokenizer
    own = jinja_format(GEMMA, tok, "test")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"}]
    assert own.render(messages).startswith("<bos><start_of_turn>user\nBe brief.\n\n")
    ids = own.encode(messages)
    assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id
    assert ids == chat_format(gemma_file, override="gemma").encode(messages)
    assert own.stop_token_ids == {tok.token_id("<end_of_turn>"), tok.eos_id}


def _gguf_with_template(path: Path, template: object) -> Path:
    from support.synthetic import SynthConfig, random_weights, write_gguf

    config = SynthConfig()
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", *(f"<0x{b:02X}>" for b in range(256)), "▁"]
    tokens += [f"t{i}" for i in range(config.vocab - len(tokens))]
    types = [2, 3, 3, 3, 3, *([6] * 256), *([1] * (config.vocab - 261))]
    metadata = {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * len(tokens), "tokenizer.ggml.token_type": types,
        "tokenizer.chat_template": template,
    }
    write_gguf(path, config, random_weights(config, np.random.default_rng(0)), metadata=metadata)
    return path


def test_gguf_carrying_a_template(tmp_path):
    file = open_model(_gguf_with_template(tmp_path / "m.gguf", CHATML_QWEN))
    fmt = chat_format(file)
    assert (fmt.name, fmt.origin) == ("jinja", f"{file.path}: tokenizer.chat_template")
    text = fmt.render([{"role": "user", "content": "x"}])
    assert text == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert fmt.encode([{"role": "user", "content": "x"}])[:2] == [1, 3]  # BOS, then <|im_start|> as one token
    assert fmt.stop_token_ids == {4, 2}
    assert chat_format(file, override="llama2").name == "llama2"  # --chat-template wins over the model's own


def test_gguf_template_that_does_not_parse(tmp_path):
    file = open_model(_gguf_with_template(tmp_path / "m.gguf", "{% for m in messages %}{{ m.content }"))
    with pytest.raises(ChatTemplateError, match=r"tokenizer.chat_template: the chat template does not parse: line 1"):
        chat_format(file)


def _safetensors_with_tokenizer(folder: Path, tokenizer_config: dict) -> Path:
    from support.synthetic import SynthConfig, random_weights, write_safetensors
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = SynthConfig()
    write_safetensors(folder, config, random_weights(config, np.random.default_rng(0)))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "user": 3, "assistant": 4, "hello": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def test_safetensors_tokenizer_config_template(tmp_path):
    named = [{"name": "tool_use", "template": "{{ tools }}"}, {"name": "default", "template": CHATML_QWEN}]
    folder = _safetensors_with_tokenizer(tmp_path, {"bos_token": "<s>", "eos_token": "</s>", "chat_template": named})
    file = open_model(folder)
    fmt = chat_format(file)
    assert (fmt.name, fmt.origin) == ("jinja", f"{folder / 'tokenizer_config.json'}: chat_template")
    messages = [{"role": "system", "content": "hello"}, {"role": "user", "content": "hello"}]
    assert fmt.render(messages) == "<|im_start|>system\nhello<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n" \
                                   "<|im_start|>assistant\n"
    im_start, im_end = file.tokenizer.encode("<|im_start|><|im_end|>", add_bos=False, parse_special=True)
    assert fmt.encode(messages) == [im_start, 0, 5, im_end, im_start, 3, 5, im_end, im_start, 4]
    assert fmt.stop_token_ids == {im_end, 2}


def test_safetensors_chat_template_jinja_file(tmp_path):
    folder = _safetensors_with_tokenizer(tmp_path, {"bos_token": "<s>", "eos_token": "</s>"})
    (folder / "chat_template.jinja").write_text(LLAMA3)
    assert model_template(open_model(folder)) == (LLAMA3, str(folder / "chat_template.jinja"))
    (folder / "chat_template.jinja").unlink()
    fmt = chat_format(open_model(folder))  # no template: the built-in its vocabulary's <|im_start|> points to
    assert (fmt.name, fmt.origin) == ("chatml", "built-in (its vocabulary has <|im_start|>; the model carries no "
                                                "chat template)")


@pytest.mark.parametrize(("source", "expected"), [
    ("{% for m in messages %}{{ m.content }", r"does not parse: line 1: unexpected '}'"),
    ("{% if x %}\n\nno end", r"does not parse: line \d: Unexpected end of template\. Jinja was looking for"),
    ("{{ raise_exception('No system\nmessages, please') }}", r"refuses the conversation: No system messages, please$"),
    ("{{ messages[0].content.upper().nope() }}", r"the chat template fails: .*nope"),
    ("{{ 1 / 0 }}", r"the chat template fails: ZeroDivisionError: division by zero"),
    ("{{ ''.__class__.__mro__ }}", r"fails: access to attribute '__class__' of 'str' object is unsafe"),
    ("{% set ns = namespace(_x=1) %}", r"underscore names are refused"),
    ("{{ messages.append(1) }}", r"the chat template fails: .*unsafe"),
    ("{{ undefined_name.attr }}", r"the chat template fails: 'undefined_name' is undefined"),
])
def test_bad_templates_give_one_line(source, expected):
    with pytest.raises(ChatTemplateError, match=expected) as info:
        JinjaTemplate(source).render([{"role": "user", "content": "hi"}])
    assert "\n" not in str(info.value)


def test_non_json_content_is_refused():
    with pytest.raises(ConversationRejected, match="message 0 holds a object"):
        JinjaTemplate("{{ messages }}").render([{"role": "user", "content": object()}])


@pytest.mark.parametrize(("source", "expected"), [
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "fails: it recurses too deeply"),
    ("{% if 1 %}" * 3000, "does not parse: it is nested too deeply"),
    ("{{ range(10**9) | list }}", "fails: OverflowError: Range too big"),
])
def test_hostile_templates_end_in_one_line(source, expected):
    with pytest.raises(ChatTemplateError, match=expected):
        JinjaTemplate(source).render([])
