"""The sampling settings of a chat, as `/set NAME VALUE` changes them: each value parsed and checked on its own, so a
bad one is one line naming the setting and the others stay as they were."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from netboot.commands.options import sampling_limits
from netboot.engine.sampling import SamplingParams
from netboot.errors import NetbootError

UNSET = ("none", "random", "off")  # `/set seed none`: a fresh seed for every reply

# The command line's limits (netboot chat's flags), named as /set names the settings.
LIMITS = {name: replace(limit, flag=name) for name, limit in sampling_limits(min_tokens=1).items()
          if name != "repeat_last_n"}
WHOLE = frozenset({"top_k", "seed", "max_tokens"})


@dataclass(frozen=True)
class Settings:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int = 512

    def params(self, repeat_last_n: int = 64) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                              repeat_penalty=self.repeat_penalty, repeat_last_n=repeat_last_n, seed=self.seed)

    def with_value(self, name: str, text: str) -> Settings:
        """These settings with `name` set to `text` parsed; NetbootError naming the setting when it is not one or
        the value is out of its range."""
        if name not in LIMITS:
            raise NetbootError(f"unknown setting {name!r} (settings: {', '.join(LIMITS)})")
        return replace(self, **{name: parse_value(name, text)})

    def shown(self) -> str:
        return "\n".join(f"{name:<15} {'none' if value is None else value}" for name, value in asdict(self).items())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Settings:
        """Settings as a saved conversation holds them: every key known, every value acceptable."""
        if not isinstance(data, dict):
            raise NetbootError("settings must be an object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise NetbootError(f"unknown setting {sorted(unknown)[0]!r}")
        for name, value in data.items():
            check_value(name, value)
        return cls(**data)


def parse_value(name: str, text: str) -> int | float | None:
    text = text.strip()
    if name == "seed" and text.lower() in UNSET:
        return None
    try:
        value: int | float = int(text) if name in WHOLE else float(text)
    except ValueError:
        kind = "a whole number" if name in WHOLE else "a number"
        raise NetbootError(f"{name} must be {kind} {LIMITS[name].bounds()} (got {text!r})") from None
    check_value(name, value)
    return value


def check_value(name: str, value: object) -> None:
    if name == "seed" and value is None:
        return
    whole = name in WHOLE
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise NetbootError(f"{name} must be {'a whole number' if whole else 'a number'} (got {value!r})")
    LIMITS[name].check(value)
