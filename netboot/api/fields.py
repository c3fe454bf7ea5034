"""A JSON request body read field by field: each getter checks the type and range of one field and raises a 400
naming it, and every field it does not know, or knows and does not implement, is refused by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from netboot.api.errors import bad
from netboot.errors import clipped

ABSENT = object()


def kind(value: Any) -> str:
    """A JSON value's type as the client wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


class Body:
    """The fields of a JSON object; null counts as absent, as it does for OpenAI."""

    def __init__(self, data: Any, where: str = ""):
        if not isinstance(data, dict):
            what = f"'{where}'" if where else "the request body"
            raise bad(f"{what} must be a JSON object, not {kind(data)}", where or None)
        self.data = data
        self.where = where

    def name(self, field: str) -> str:
        return f"{self.where}.{field}" if self.where else field

    def raw(self, field: str) -> Any:
        value = self.data.get(field)
        return ABSENT if value is None else value

    def has(self, field: str) -> bool:
        return self.raw(field) is not ABSENT

    def required(self, field: str) -> Any:
        value = self.raw(field)
        if value is ABSENT:
            raise bad(f"missing required field '{self.name(field)}'", self.name(field))
        return value

    def boolean(self, field: str, default: bool = False) -> bool:
        value = self.raw(field)
        if value is ABSENT:
            return default
        if not isinstance(value, bool):
            raise self.wrong(field, "a boolean", value)
        return value

    def string(self, field: str, default: str | None = None) -> str | None:
        value = self.raw(field)
        if value is ABSENT:
            return default
        if not isinstance(value, str):
            raise self.wrong(field, "a string", value)
        return value

    def integer(self, field: str, low: int | None = None, high: int | None = None) -> int | None:
        value = self.raw(field)
        if value is ABSENT:
            return None
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)  # JSON has one number type: 2.0 is 2
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong(field, "an integer", value)
        self._range(field, value, low, high)
        return value

    def number(self, field: str, low: float, high: float | None = None, *, above: bool = False) -> float | None:
        value = self.raw(field)
        if value is ABSENT:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.wrong(field, "a number", value)
        if above and value <= low:
            raise bad(f"'{self.name(field)}' must be greater than {low:g} (got {clipped(value)})", self.name(field))
        self._range(field, value, low, high)
        return float(value)

    def _range(self, field: str, value: float, low: float | None, high: float | None) -> None:
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low:g}" if high is None else f"at most {high:g}" if low is None else \
                f"between {low:g} and {high:g}"
            raise bad(f"'{self.name(field)}' must be {bounds} (got {clipped(value)})", self.name(field))

    def wrong(self, field: str, expected: str, value: Any) -> Exception:
        return bad(f"'{self.name(field)}' must be {expected}, not {kind(value)} ({clipped(value)})",
                   self.name(field))

    def only(self, known: Iterable[str], unsupported: Mapping[str, Callable[[Any], bool]],
             ignored: Iterable[str] = ()) -> None:
        """Refuse every field outside `known` and `ignored`, and every field of `unsupported` whose value asks for
        something (the predicate says whether a value is the harmless default)."""
        allowed = set(known) | set(ignored) | set(unsupported)
        for field, value in self.data.items():
            if field not in allowed:
                raise bad(f"unrecognized request argument supplied: '{self.name(field)}'", self.name(field))
            harmless = unsupported.get(field)
            if harmless is not None and value is not None and not harmless(value):
                raise bad(f"'{self.name(field)}' is not supported by this server (netboot generates plain text "
                          f"from text)", self.name(field), "unsupported_parameter")
