"""The web chat page that `netboot api` serves at `/`, in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) against a real `netboot api --api-key` on the default model: the key prompt,
a streamed reply equal to the API's own answer, server errors shown in the page, the Stop button (the server cancels
the request), HTML in messages shown as text, code blocks, and the screenshot kept in docs/web-chat.png
(rewritten when NETBOOT_UPDATE_SCREENSHOT=1; otherwise it goes to the test's temporary directory)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.serverprocs import ROOT, clean_env, free_port, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]

KEY = "page-test-" + secrets.token_hex(8)
SCREENSHOT = ROOT / "docs" / "web-chat.png"
FINISHED = ("done", "stopped", "error")


# ---- the browser: Debian's chromium and chromedriver, never a download


def need_browser() -> tuple[str, str]:
    """Chromium and its driver. Missing: the test fails when $CI is set (.ci/run installs them), and is skipped,
    loudly, elsewhere."""
    chromium = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                     if p and os.access(p, os.X_OK)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.access(p, os.X_OK)), None)
    if chromium is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None)
        message = (f"{missing} not installed: the web chat page test needs a real browser "
                   "(apt-get install chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(message + " -- and CI is set, where it must be present")
        pytest.skip("!!! SKIPPED: " + message)
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = need_browser()
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never try to download a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800",
                "--lang=en-US", "--no-first-run", "--disable-extensions", "--force-color-profile=srgb"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


# ---- the server: a real `netboot api` on the default model


class Api:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.log = (tmp / "api.log").open("w+")
        cmd = [sys.executable, "-m", "netboot", "api", "--port", str(self.port), "--parallel", "2",
               "--ctx-size", "1024", "--api-key", KEY]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=clean_env(),
                                     start_new_session=True)
        wait_for(self.ready, 240, "netboot api to answer /health with 200")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """The server's output, less the access log's /health lines."""
        self.log.flush()
        self.log.seek(0)
        return "".join(line for line in self.log if '"/health"' not in line)[-4000:]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"netboot api exited with {self.proc.returncode}:\n{self.output()}")
        try:
            if self.request("GET", "/health")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
        return False

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = KEY):
        """(status, parsed JSON or text) of one request, independent of the page."""
        req = urllib.request.Request(self.origin + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=120) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    if not (ROOT / "netboot" / "commands" / "api.py").exists():
        pytest.fail("netboot api is not there (netboot/commands/api.py)")
    server = Api(tmp_path_factory.mktemp("api"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(api, browser):
    """The page, opened once, without its API key (test_key_prompt... enters it)."""
    browser.get(api.origin + "/")
    wait_for(lambda: browser.execute_script("return !!window.netbootChat"), 30, "the page's script")
    return browser


@pytest.fixture
def chat(page):
    """The page with the API key entered (by test_key_prompt..., or here when a test runs alone)."""
    if by_id(page, "api-key").get_attribute("value") != KEY:
        set_field(page, "api-key", KEY)
        wait_for(lambda: not by_id(page, "notice").is_displayed(), 30, "the page to accept the key")
    return page


# ---- reading and driving the page


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def set_field(driver, element_id: str, value: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    if value:
        field.send_keys(value)
    assert field.get_attribute("value") == value


def reply(driver) -> dict:
    """The last assistant bubble: its state, raw text, shown text, error text and meta line."""
    return driver.execute_script("""
        const b = [...document.querySelectorAll('#messages .msg.assistant')].pop();
        if (!b) return null;
        const part = (sel) => { const el = b.querySelector(sel); return el ? el.textContent : ''; };
        return {state: b.dataset.state, raw: b.dataset.raw, text: b.querySelector('.body').innerText,
                error: part('.error'), meta: part('.meta'), finish: b.dataset.finish || ''};
    """)


def wait_reply(driver, timeout: float = 180) -> dict:
    wait_for(lambda: (reply(driver) or {}).get("state") in FINISHED, timeout, "the reply to finish")
    return reply(driver)


def conversation(driver) -> list[dict]:
    return driver.execute_script("return window.netbootChat.conversation")


def new_chat(driver) -> None:
    by_id(driver, "new-chat").click()
    assert driver.execute_script("return document.querySelectorAll('#messages .msg').length") == 0


def ui_ready(driver) -> bool:
    return (by_id(driver, "send").is_enabled() and not by_id(driver, "stop").is_enabled()
            and by_id(driver, "input").is_enabled())


def type_and_enter(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = by_id(driver, "input")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


# ---- the tests (in order: the first enters the key)


def test_key_prompt_then_streamed_reply_equals_the_api(api, page):
    status, models = api.request("GET", "/v1/models")
    assert status == 200, models
    model_id = models["data"][0]["id"]

    # Without a key the page asks for one, with the server's own message, and focuses the field.
    status, refused = api.request("GET", "/v1/models", key=None)
    assert status == 401, refused
    notice = by_id(page, "notice")
    wait_for(lambda: notice.is_displayed() and "API key" in notice.text, 30, "the page to ask for the API key")
    assert refused["error"]["message"] in notice.text
    assert page.switch_to.active_element == by_id(page, "api-key")

    by_id(page, "api-key").send_keys(KEY)
    wait_for(lambda: by_id(page, "model").text == model_id, 30, f"the model name {model_id!r} in the page")
    assert not notice.is_displayed()
    assert page.execute_script("return localStorage.getItem('netboot.chat.apiKey')") == KEY

    set_field(page, "temperature", "0")
    set_field(page, "max_tokens", "48")
    page.execute_script("""
        window.__lengths = [];
        new MutationObserver(() => {
            const b = [...document.querySelectorAll('#messages .msg.assistant')].pop();
            if (b) window.__lengths.push(b.dataset.raw.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    """)
    question = "What is the capital of France? Answer in one sentence."
    type_and_enter(page, question)  # Enter sends
    assert by_id(page, "input").get_attribute("value") == ""
    done = wait_reply(page)
    assert done["state"] == "done", done
    assert done["text"].strip() and done["raw"].strip()

    # It streamed: the bubble grew through several lengths before the end.
    lengths = sorted({n for n in page.execute_script("return window.__lengths") if n})
    assert len(lengths) >= 2, lengths

    # The kept conversation is what was asked and answered, and the answer is the API's own (greedy).
    turns = conversation(page)
    assert [m["role"] for m in turns] == ["user", "assistant"]
    assert turns[0]["content"] == question and turns[1]["content"] == done["raw"]
    status, answer = api.request("POST", "/v1/chat/completions", {
        "model": model_id, "messages": turns[:1], "temperature": 0, "max_tokens": 48})
    assert status == 200, answer
    assert done["raw"] == answer["choices"][0]["message"]["content"]

    # The speed of the last reply, from the usage chunk's token count.
    tokens = answer["usage"]["completion_tokens"]
    stats = by_id(page, "stats").text
    assert re.search(rf"\b{tokens} tokens? · [\d.]+ tok/s", stats), stats
    assert ui_ready(page)

    # Shift+Enter is a new line, not a send.
    from selenium.webdriver.common.keys import Keys

    box = by_id(page, "input")
    box.send_keys("one", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "two")
    assert box.get_attribute("value") == "one\ntwo"
    assert len(conversation(page)) == 2
    box.clear()


def test_the_next_turn_sends_the_whole_conversation(api, chat):
    new_chat(chat)
    set_field(chat, "temperature", "0")
    set_field(chat, "max_tokens", "48")
    type_and_enter(chat, "What is the capital of France? Answer in one sentence.")
    assert wait_reply(chat)["state"] == "done"
    before = conversation(chat)
    type_and_enter(chat, "And of Germany?")
    done = wait_reply(chat)
    assert done["state"] == "done", done
    turns = conversation(chat)
    assert turns[:2] == before and [m["role"] for m in turns] == ["user", "assistant"] * 2
    status, answer = api.request("POST", "/v1/chat/completions", {
        "messages": turns[:3], "temperature": 0, "max_tokens": 48})
    assert status == 200, answer
    assert done["raw"] == answer["choices"][0]["message"]["content"]


def test_server_errors_are_shown(api, chat):
    new_chat(chat)
    # A 400: the OpenAI error object's message, in the bubble; the turn leaves the conversation.
    set_field(chat, "top_p", "5")
    status, refused = api.request("POST", "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hello"}], "top_p": 5})
    assert status == 400, refused
    type_and_enter(chat, "hello")
    failed = wait_reply(chat, 30)
    assert failed["state"] == "error", failed
    assert refused["error"]["message"] in failed["error"]
    assert conversation(chat) == []
    assert by_id(chat, "input").get_attribute("value") == "hello"  # back in the box, to send again
    set_field(chat, "top_p", "0.95")

    # A 401 (wrong key): the message, and the chat asks for the key.
    set_field(chat, "api-key", "wrong-key")
    status, refused = api.request("POST", "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hello"}]}, key="wrong-key")
    assert status == 401, refused
    by_id(chat, "send").click()
    failed = wait_reply(chat, 30)
    assert failed["state"] == "error" and refused["error"]["message"] in failed["error"], failed
    assert "API key" in by_id(chat, "notice").text
    set_field(chat, "api-key", KEY)
    wait_for(lambda: not by_id(chat, "notice").is_displayed(), 10, "the key notice to go")
    assert ui_ready(chat)


def test_stop_cancels_the_reply(api, chat):
    new_chat(chat)
    set_field(chat, "temperature", "0")
    set_field(chat, "max_tokens", "400")
    by_id(chat, "input").send_keys("Write a long story about a dragon who learns to fly. Use at least 300 words.")
    by_id(chat, "send").click()
    wait_for(lambda: bool((reply(chat) or {}).get("raw")), 120, "the first words of the long reply")
    assert by_id(chat, "stop").is_enabled() and not by_id(chat, "send").is_enabled()
    assert reply(chat)["state"] == "streaming"
    by_id(chat, "stop").click()
    clicked = time.monotonic()
    wait_for(lambda: reply(chat)["state"] != "streaming", 2, "the reply to stop")
    stopped = reply(chat)
    assert stopped["state"] == "stopped", stopped
    assert time.monotonic() - clicked < 2
    time.sleep(1.5)
    assert reply(chat)["raw"] == stopped["raw"], "the reply kept growing after Stop"
    assert "stopped" in stopped["meta"]
    assert ui_ready(chat)
    # The partial reply stays in the conversation.
    turns = conversation(chat)
    assert [m["role"] for m in turns] == ["user", "assistant"] and turns[1]["content"] == stopped["raw"]

    # The server cancelled the request (its /metrics counts it) ...
    def cancelled() -> float:
        status, text = api.request("GET", "/metrics")
        assert status == 200, text
        values = [float(m.group(1)) for line in str(text).splitlines() if not line.startswith("#")
                  and "cancel" in line for m in [re.search(r"\s([0-9.e+]+)\s*$", line)] if m]
        return sum(values)

    wait_for(lambda: cancelled() >= 1, 10, "/metrics to count a cancelled request")

    # ... and the next message works.
    set_field(chat, "max_tokens", "16")
    type_and_enter(chat, "Now say hello.")
    done = wait_reply(chat)
    assert done["state"] == "done" and done["raw"], done
    assert len(conversation(chat)) == 4


def test_html_in_messages_is_text(api, chat):
    new_chat(chat)
    set_field(chat, "max_tokens", "8")
    message = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> <b>what is this?</b>'
    type_and_enter(chat, message)
    wait_reply(chat)
    shown = chat.execute_script("return document.querySelector('#messages .msg.user .body').textContent")
    assert shown == message
    assert chat.execute_script(
        "return document.querySelectorAll('#messages script, #messages img, #messages b').length") == 0
    assert chat.execute_script("return window.__pwned === undefined")

    # The model's text is escaped too: injected through the chat's own renderer.
    chat.execute_script("window.netbootChat.addMessage('assistant', arguments[0])", message)
    assert reply(chat)["text"].strip() == message
    assert chat.execute_script(
        "return document.querySelectorAll('#messages script, #messages img, #messages b').length") == 0
    assert chat.execute_script("return window.__pwned === undefined")


def test_code_blocks_are_rendered(page):
    text = ("Here is a function:\n\n```python\ndef less(a, b):\n    return a < b  # <b>not bold</b>\n```\n\n"
            "Call `less(1, 2)`; it is **fast**.\n\n- one\n- two\n\n```\nunclosed <i>fence")
    page.execute_script("window.netbootChat.addMessage('assistant', arguments[0])", text)
    found = page.execute_script("""
        const b = [...document.querySelectorAll('#messages .msg.assistant')].pop();
        return {
            blocks: [...b.querySelectorAll('pre > code')].map(c => [c.dataset.lang || '', c.textContent]),
            inline: [...b.querySelectorAll(':not(pre) > code')].map(c => c.textContent),
            strong: [...b.querySelectorAll('strong')].map(s => s.textContent),
            items: [...b.querySelectorAll('ul > li')].map(li => li.textContent),
            tags: b.querySelectorAll('b, i').length,
            mono: getComputedStyle(b.querySelector('pre')).whiteSpace,
        };
    """)
    assert found["blocks"] == [["python", "def less(a, b):\n    return a < b  # <b>not bold</b>"],
                               ["", "unclosed <i>fence"]], found
    assert found["inline"] == ["less(1, 2)"] and found["strong"] == ["fast"], found
    assert found["items"] == ["one", "two"] and found["tags"] == 0, found
    assert found["mono"] == "pre"


def test_screenshot_of_a_conversation(api, chat, tmp_path):
    new_chat(chat)
    inner = chat.execute_script("return [window.innerWidth, window.innerHeight]")
    if inner != [1200, 800]:  # the viewport, not the window, is 1200x800
        size = chat.get_window_size()
        chat.set_window_size(size["width"] + 1200 - inner[0], size["height"] + 800 - inner[1])
    set_field(chat, "temperature", "0")
    set_field(chat, "max_tokens", "24")
    # The default model is a base model, not tuned for chat: it does best at completing something.
    prompt = "Complete this Python function:\n\n```python\ndef is_prime(n):"  # Enter would send: set, not typed
    chat.execute_script("const box = document.getElementById('input'); box.value = arguments[0];"
                        "box.dispatchEvent(new Event('input'))", prompt)
    by_id(chat, "send").click()
    done = wait_reply(chat)
    assert done["state"] == "done", done
    chat.execute_script("document.activeElement.blur(); document.getElementById('settings').scrollTop = 0")
    target = SCREENSHOT if os.environ.get("NETBOOT_UPDATE_SCREENSHOT") == "1" else tmp_path / "web-chat.png"
    assert chat.save_screenshot(str(target))
    png = target.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1200, 800), (width, height)
