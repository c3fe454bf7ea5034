"""`netboot chat` on a real terminal (a pty, through pexpect) and on a pipe, with the real default model: replies
stream and equal the engine-free greedy generation of the same templated conversation, later turns reuse the KV
cache, Ctrl+C stops a reply at once, and the slash commands, history and \"\"\" blocks work as a user meets them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

PROMPT = ">>> "
STARTUP = 180  # s: loading the model on a busy 2-core machine
REPLY = 120  # s: a short reply, the same
CHAT = ["--temperature", "0", "-n", "16", "--ctx-size", "1024"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def clean(text: str) -> str:
    """What the terminal showed, as text: without escape sequences and carriage returns."""
    return ANSI.sub("", text).replace("\r", "")


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "NETBOOT_CHAT_HISTORY": str(tmp_path / "history"), "TERM": "xterm"}


def spawn(tmp_path: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "netboot", "chat", *(args or CHAT)], env=env(tmp_path),
                          encoding="utf-8", timeout=REPLY, dimensions=(50, 250))
    child.expect_exact(PROMPT, timeout=STARTUP)
    return child


def ask(child: pexpect.spawn, line: str) -> str:
    """Type a line; what was printed until the next prompt, less the echo of the line."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    shown = clean(child.before)
    echo = line + "\n"
    assert shown.startswith(echo), (line, shown)
    return shown[len(echo):]


def leave(child: pexpect.spawn, how: str = "/bye") -> int:
    child.sendline(how) if how.startswith("/") else child.send(how)
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    return child.exitstatus


def greedy(default_model, messages: list[dict[str, str]], n: int = 16) -> str:
    """The reply without the serving engine: netboot.Generation on the templated conversation's ids."""
    from netboot.chat import chat_format
    from netboot.engine.generate import Generation
    from netboot.engine.sampling import SamplingParams

    chat = chat_format(default_model.file, default_model.tokenizer)
    gen = Generation(default_model.model, default_model.tokenizer, chat.encode(messages), max_tokens=n,
                     params=SamplingParams(temperature=0))
    parts = []
    for token_text in gen.stream():
        parts.append(token_text)
    return "".join(parts)


def stat(report: str, pattern: str) -> int:
    found = re.search(pattern, report)
    assert found, (pattern, report)
    return int(found.group(1))


@pytest.mark.slow
def test_turns_stream_reuse_the_cache_and_equal_greedy_generation(tmp_path, default_model):
    child = spawn(tmp_path)
    first = ask(child, "Hello! What is the capital of France?")
    second = ask(child, "And of Italy?")
    report = ask(child, "/stats")
    assert leave(child) == 0

    user1, user2 = "Hello! What is the capital of France?", "And of Italy?"
    reply1 = greedy(default_model, [{"role": "user", "content": user1}])
    assert first == reply1 + "\n\n"
    reply2 = greedy(default_model, [{"role": "user", "content": user1}, {"role": "assistant", "content": reply1},
                                    {"role": "user", "content": user2}])
    assert second == reply2 + "\n\n"
    prompt, cached = stat(report, r"prompt: +(\d+) tokens"), stat(report, r"(\d+) cached")
    assert cached > 0 and prompt - cached < cached, report  # only the new turn was computed
    assert "ended: length, max_tokens" in report and "KV cache:" in report


def test_ctrl_c_stops_a_reply_at_once_and_the_chat_goes_on(tmp_path):
    child = spawn(tmp_path, "--temperature", "0", "-n", "400", "--ctx-size", "1024")
    child.sendline("Write a very long story about a dragon who learns to bake bread.")
    child.expect_exact("bread.")  # the echo
    child.expect(r"\w+\W+\w+\W+\w+")  # the reply has started streaming
    child.send("\x03")
    sent = time.monotonic()
    child.expect_exact(PROMPT, timeout=10)
    assert time.monotonic() - sent < 2.5
    report = ask(child, "/stats")
    assert "ended: cancelled" in report
    assert stat(report, r"reply: +(\d+) tokens") < 400
    child.sendline("/set max_tokens 8")
    child.expect_exact(PROMPT)
    after = ask(child, "Thanks!")
    assert after.strip()
    assert "ended: length, max_tokens" in ask(child, "/stats")
    assert leave(child) == 0


def test_commands(tmp_path):
    child = spawn(tmp_path)
    bad = ask(child, "/set temperature abc")
    assert bad.strip().splitlines() == ["error: temperature must be a number >= 0 (got 'abc')"]
    assert ask(child, "/set temperature 0.5").strip() == "Set temperature to 0.5."
    shown = ask(child, "/set")
    assert re.search(r"^temperature +0\.5$", shown, re.M) and re.search(r"^max_tokens +16$", shown, re.M)
    assert len(ask(child, "/set top_p 7").strip().splitlines()) == 1
    assert ask(child, "/frobnicate").strip() == "error: unknown command /frobnicate (/help lists them)"
    helped = ask(child, "/help")
    for name in ("/set", "/system", "/reset", "/stats", "/model_info", "/models", "/save", "/load", "/bye"):
        assert name in helped
    ask(child, "/system You answer in one word.")
    assert ask(child, "/system").strip() == "You answer in one word."
    info = ask(child, "/model_info")
    assert re.search(r"^architecture: +gemma3: 18 layers", info, re.M), info
    assert "chat template: gemma" in info and "all 18 layers resident" in info and "gguf" in info
    models = ask(child, "/models")
    assert re.search(r"^ \* .*gemma-3-270m.*\.gguf", models, re.M), models
    assert "no reply yet" in ask(child, "/stats")
    assert leave(child, "/exit") == 0


@pytest.mark.slow
def test_save_reset_load(tmp_path):
    child = spawn(tmp_path)
    ask(child, "/system Be brief.")
    ask(child, "/set top_k 5")
    reply = ask(child, "Name a color.")
    path = tmp_path / "chat.json"
    assert ask(child, f"/save {path}").strip() == f"Saved 2 messages to {path}."
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["system"] == "Be brief." and data["settings"]["top_k"] == 5
    assert data["messages"] == [{"role": "user", "content": "Name a color."},
                                {"role": "assistant", "content": reply[:-2]}]
    assert ask(child, "/reset").strip() == "Started a new conversation."
    assert "no reply yet" in ask(child, "/stats")
    ask(child, "/set top_k 40")
    assert ask(child, f"/load {path}").strip() == f"Loaded 2 messages from {path}."
    assert re.search(r"^top_k +5$", ask(child, "/set"), re.M)
    assert ask(child, "Another one?").strip()
    report = ask(child, "/stats")
    assert stat(report, r"(\d+) cached") > stat(report, r"(\d+) computed")  # the loaded turns were in the cache
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    bad = ask(child, f"/load {tmp_path / 'bad.json'}").strip().splitlines()
    assert len(bad) == 1 and "bad.json: not a saved conversation" in bad[0]
    assert leave(child) == 0


def test_multiline_history_ctrl_c_at_the_prompt_and_ctrl_d(tmp_path):
    child = spawn(tmp_path)
    child.sendline('"""')
    child.expect_exact("... ")
    child.sendline("/set temperature 0.7")  # inside a block: text of the message, not a command
    child.expect_exact("... ")
    child.sendline('Say hi."""')
    child.expect_exact(PROMPT)
    assert "Set temperature" not in clean(child.before)
    report = ask(child, "/stats")
    assert stat(report, r"prompt: +(\d+) tokens") > 15  # both lines were sent as one message
    assert ask(child, "/set seed 3").strip() == "Set seed to 3."
    child.send("\x1b[A")  # arrow up: the line before comes back, to be sent again
    child.expect_exact("/set seed 3")
    child.send("\r")
    child.expect_exact(PROMPT)
    assert "Set seed to 3." in clean(child.before)
    child.send("\x03")
    child.expect_exact("Use Ctrl + d or /bye to exit.")
    child.expect_exact(PROMPT)
    assert leave(child, "\x04") == 0
    assert "/set seed 3" in (tmp_path / "history").read_text()


def test_piped_stdin(tmp_path):
    result = subprocess.run([sys.executable, "-m", "netboot", "chat", *CHAT], input="Hello there\n/stats\n",
                            capture_output=True, text=True, timeout=STARTUP, env=env(tmp_path), check=False)
    assert result.returncode == 0, result.stderr
    assert PROMPT not in result.stdout and "Traceback" not in result.stderr
    assert "prompt:" in result.stdout and "reply:" in result.stdout
    assert result.stdout.split("prompt:")[0].strip()  # the reply came before the stats


def test_a_full_context_is_reported_and_the_chat_goes_on(tmp_path):
    result = subprocess.run([sys.executable, "-m", "netboot", "chat", "--temperature", "0", "-n", "400",
                             "--ctx-size", "40"], input="Tell me a story.\nMore.\n/reset\nHi\n", capture_output=True,
                            text=True, timeout=STARTUP, env=env(tmp_path), check=False)
    assert result.returncode == 0, result.stderr
    errors = result.stderr.strip().splitlines()
    assert "filled the context (40 positions)" in errors[0] and "/reset" in errors[0]
    assert "the context holds 40" in errors[1] and "/reset" in errors[1]
    assert "Started a new conversation." in result.stdout
    assert "Traceback" not in result.stderr


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)


@pytest.mark.slow
def test_a_model_streamed_from_a_server(tmp_path, servers, default_model_path):
    root = tmp_path / "served"
    root.mkdir()
    link_or_copy(default_model_path, root / default_model_path.name)
    url = servers.netboot_serve(root).url(default_model_path.name)
    child = spawn(tmp_path, url, "--max-memory", "200MB", "--parallel", "1", "--ctx-size", "256",
                  "--temperature", "0", "-n", "4")
    models = ask(child, "/models")
    assert re.search(rf"^ \* gemma-3-270m\S* .* gemma3 +{re.escape(url)}$", models, re.M), models
    info = ask(child, "/model_info")
    assert re.search(rf"^source: +{re.escape(url)}$", info, re.M), info
    assert re.search(r"^placement: .*streamed from network", info, re.M), info
    assert ask(child, "Hi").strip()
    assert leave(child) == 0


def test_a_bad_flag_is_one_line_before_anything_loads(tmp_path):
    result = subprocess.run([sys.executable, "-m", "netboot", "chat", "--top-p", "0"], capture_output=True, text=True,
                            timeout=60, env=env(tmp_path), stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["netboot: error: --top-p must be in (0, 1] (got 0.0)"]
