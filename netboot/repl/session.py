"""A chat's state: the system prompt, the messages so far and the sampling settings; saved as JSON (through a
temporary file renamed into place, so a crash never leaves half a file) and loaded back with every field checked."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netboot.errors import NetbootError, clipped
from netboot.repl.settings import Settings

FORMAT = "netboot-chat"
VERSION = 1
ROLES = ("user", "assistant")
MAX_FILE = 64 << 20  # bytes: a conversation far beyond any context


@dataclass
class Session:
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)

    def conversation(self) -> list[dict[str, str]]:
        """The messages a prompt is made of: the system prompt first, when there is one."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def add(self, role: str, content: str) -> None:
        self.messages.append({"role": role, "content": content})

    def drop_unanswered(self) -> None:
        """Take back a user message that got no reply (its turn was interrupted before one began)."""
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()

    def reset(self) -> None:
        """A new conversation; the system prompt and settings stay."""
        self.messages = []

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "system": self.system, "messages": self.messages,
                "settings": self.settings.to_json()}

    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as e:
            raise NetbootError(f"cannot write {path}: {e.strerror or e}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as e:
            raise NetbootError(f"cannot write {path}: {e.strerror or e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Session:
        path = Path(path).expanduser()
        data = _read_json(path)
        try:
            return cls.from_json(data)
        except NetbootError as e:
            raise NetbootError(f"{path}: not a saved conversation: {e}") from None

    @classmethod
    def from_json(cls, data: object) -> Session:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise NetbootError(f'expected a JSON object with "format": "{FORMAT}"')
        if data.get("version") != VERSION:
            raise NetbootError(f"version {clipped(data.get('version'))} (this netboot reads version {VERSION})")
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise NetbootError("system must be a string or null")
        return cls(system or None, _messages(data.get("messages")), Settings.from_json(data.get("settings", {})))


def _read_json(path: Path) -> object:
    try:
        if path.stat().st_size > MAX_FILE:
            raise NetbootError(f"{path}: over {MAX_FILE >> 20} MB, not a saved conversation")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise NetbootError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise NetbootError(f"{path}: not a saved conversation (not UTF-8 text)") from None
    except (ValueError, RecursionError) as e:
        raise NetbootError(f"{path}: not a saved conversation (invalid JSON: {str(e)[:120]})") from None


def _messages(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise NetbootError("messages must be a list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise NetbootError(f"message {i} must be {{\"role\": \"user\"|\"assistant\", \"content\": string}}")
        out.append({"role": m["role"], "content": m["content"]})
    return out
