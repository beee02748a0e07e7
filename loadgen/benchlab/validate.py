"""Checking the lab's YAML files (scenarios, claims) key by key, one way for every file.

Every problem is one ``BenchlabError`` line ``FILE: KEY: what was expected, got what``, the
form users and tests rely on; ``KEY`` is the dotted path into the document (``tests.json``,
``claims[2].checks[0].ratio``). ``Checker`` knows the file; each method checks one value at
one key and returns it typed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from benchlab.errors import BenchlabError


@dataclass
class Checker:
    file: str  # as it is named in messages

    def error(self, key: str, problem: str) -> BenchlabError:
        return BenchlabError(f"{self.file}: {key or '(top level)'}: {problem}")

    def fail(self, key: str, expected: str, got: Any) -> BenchlabError:
        return self.error(key, f"expected {expected}, got {got!r}")

    def mapping(self, value: Any, key: str, allowed: Iterable[str], required: Iterable[str] = ()) -> Mapping[str, Any]:
        """A mapping with only ``allowed`` keys and every ``required`` one."""
        if not isinstance(value, Mapping):
            raise self.fail(key, "a mapping", value)
        allowed = tuple(allowed)
        for k in value:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                raise self.error(where, f"unknown key; expected one of {', '.join(allowed)}")
        for k in required:
            if k not in value:
                raise self.error(f"{key}.{k}" if key else k, "required key missing")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "non-empty text", value)
        return value.strip()

    def choice(self, value: Any, key: str, allowed: Iterable[str], what: str = "one of") -> str:
        allowed = tuple(allowed)
        if value not in allowed:
            raise self.fail(key, f"{what} {', '.join(allowed)}", value)
        return value

    def pos_int(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, "a positive integer", value)
        return value

    def number(self, value: Any, key: str, *, positive: bool) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            raise self.fail(key, "a positive number" if positive else "a number >= 0", value)
        return float(value)

    def items(self, value: Any, key: str, what: str) -> list[Any]:
        """A non-empty list (``what`` says of what, for the message)."""
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"a non-empty list of {what}", value)
        return value

    def int_list(self, value: Any, key: str, *, maximum: int | None = None) -> tuple[int, ...]:
        what = "a list of positive integers" + (f" up to {maximum}" if maximum else "")
        if not isinstance(value, list) or not value:
            raise self.fail(key, what, value)
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (maximum and v > maximum):
                raise self.fail(key, what, v)
        if len(set(value)) != len(value):
            raise self.fail(key, what + " without repeats", value)
        return tuple(value)

    def num_list(self, value: Any, key: str) -> tuple[float, ...]:
        if not isinstance(value, list):
            raise self.fail(key, "a list of positive numbers", value)
        return tuple(self.number(v, key, positive=True) for v in value)
