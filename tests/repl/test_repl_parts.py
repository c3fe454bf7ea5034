"""The chat REPL's parts without a terminal: reading messages (\"\"\" blocks), /set's checks, saving and loading a
conversation, and the slash commands' dispatch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from netboot.errors import NetbootError
from netboot.repl.commands import Context, run_command
from netboot.repl.session import Session
from netboot.repl.settings import Settings
from netboot.repl.terminal import MORE, PROMPT, read_message


def reader(lines: list[str]):
    prompts: list[str] = []
    pending = list(lines)

    def read_line(prompt: str) -> str | None:
        prompts.append(prompt)
        return pending.pop(0) if pending else None

    return read_line, prompts


def test_a_line_is_a_message():
    read_line, prompts = reader(["hello", "again"])
    assert read_message(read_line) == ("hello", False)
    assert prompts == [PROMPT]


def test_triple_quotes_span_lines():
    read_line, prompts = reader(['"""first', "second", "", 'third"""', "next"])
    assert read_message(read_line) == ("first\nsecond\n\nthird", True)
    assert prompts == [PROMPT, MORE, MORE, MORE]
    assert read_message(read_line) == ("next", False)


def test_triple_quotes_alone_on_their_lines():
    read_line, _ = reader(['"""', "/not a command", "b", '"""'])
    assert read_message(read_line) == ("/not a command\nb", True)


def test_triple_quotes_on_one_line():
    read_line, _ = reader(['"""just this"""'])
    assert read_message(read_line) == ("just this", True)


def test_end_of_input_inside_a_block_sends_it():
    read_line, _ = reader(['"""', "unfinished"])
    assert read_message(read_line) == ("unfinished", True)
    assert read_message(read_line) is None


@pytest.mark.parametrize(("name", "text", "value"), [
    ("temperature", "0.5", 0.5), ("top_k", "0", 0), ("top_p", "1", 1.0), ("min_p", "0", 0.0),
    ("repeat_penalty", "1.1", 1.1), ("seed", "42", 42), ("seed", "none", None), ("max_tokens", "7", 7),
])
def test_set_accepts(name, text, value):
    assert getattr(Settings().with_value(name, text), name) == value


@pytest.mark.parametrize(("name", "text"), [
    ("temperature", "abc"), ("temperature", "-1"), ("temperature", "nan"), ("temperature", "inf"), ("top_k", "1.5"),
    ("top_p", "0"), ("top_p", "1.5"), ("min_p", "2"), ("repeat_penalty", "0"), ("seed", "-1"), ("seed", "1e3"),
    ("max_tokens", "0"), ("max_tokens", "many"),
])
def test_set_refuses_naming_the_setting(name, text):
    with pytest.raises(NetbootError) as e:
        Settings().with_value(name, text)
    assert str(e.value).startswith(name)
    assert "\n" not in str(e.value)


def test_set_refuses_an_unknown_setting():
    with pytest.raises(NetbootError, match="unknown setting 'warmth'"):
        Settings().with_value("warmth", "1")


def test_save_and_load_round_trip(tmp_path: Path):
    session = Session("Be brief.", settings=Settings(temperature=0.3, seed=7, max_tokens=9))
    session.add("user", "hi")
    session.add("assistant", "hello ✓")
    path = session.save(tmp_path / "chat.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["system"] == "Be brief." and data["messages"][1] == {"role": "assistant", "content": "hello ✓"}
    assert data["settings"]["temperature"] == 0.3
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]  # no temporary file left
    loaded = Session.load(path)
    assert loaded == session
    assert loaded.conversation()[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(("content", "fragment"), [
    ("{", "invalid JSON"),
    ("[]", "netboot-chat"),
    ('{"format": "netboot-chat", "version": 9, "messages": []}', "version 9"),
    ('{"format": "netboot-chat", "version": 1, "messages": [{"role": "robot", "content": "x"}]}', "message 0"),
    ('{"format": "netboot-chat", "version": 1, "messages": [], "settings": {"temperature": -1}}', "temperature"),
    ('{"format": "netboot-chat", "version": 1, "messages": [], "settings": {"warmth": 1}}', "warmth"),
])
def test_a_bad_file_is_one_clear_line(tmp_path: Path, content: str, fragment: str):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(NetbootError) as e:
        Session.load(path)
    assert fragment in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_loading_a_missing_file(tmp_path: Path):
    with pytest.raises(NetbootError, match="cannot read .*nope.json"):
        Session.load(tmp_path / "nope.json")


def context() -> Context:
    return Context(served=None, session=Session(), out=io.StringIO())


def test_commands_change_the_session(tmp_path: Path):
    ctx = context()
    run_command(ctx, "/system You are terse.")
    run_command(ctx, "/set temperature 0.25")
    ctx.session.add("user", "hi")
    run_command(ctx, f"/save {tmp_path / 'c.json'}")
    run_command(ctx, "/clear")
    assert ctx.session.messages == [] and ctx.session.system == "You are terse."
    run_command(ctx, f"/load {tmp_path / 'c.json'}")
    assert ctx.session.messages == [{"role": "user", "content": "hi"}]
    assert ctx.session.settings.temperature == 0.25
    run_command(ctx, "/set")
    assert "temperature     0.25" in ctx.out.getvalue()


def test_an_unanswered_message_is_taken_back():
    session = Session()
    session.add("user", "one")
    session.add("assistant", "two")
    session.drop_unanswered()
    assert len(session.messages) == 2
    session.add("user", "three")
    session.drop_unanswered()
    assert session.messages[-1]["content"] == "two"


def test_leaving_and_unknown_commands():
    ctx = context()
    assert run_command(ctx, "/bye") and run_command(ctx, "/exit")
    assert not run_command(ctx, "/help")
    assert "/model_info" in ctx.out.getvalue()
    with pytest.raises(NetbootError, match="unknown command /nope"):
        run_command(ctx, "/nope")
    with pytest.raises(NetbootError, match="needs a file name"):
        run_command(ctx, "/save")
