"""The value types the lab's YAML files are declared with, and pydantic's errors as one line.

Scenarios and claims are pydantic models; their fields use these types so that a wrong value
reads ``FILE: KEY: expected what, got what`` as users and tests know it, whatever pydantic would
say. ``KEY`` is the dotted path into the document (``tests.json``, ``claims[2].checks[0].ratio``).
A rule that spans keys raises ``at(key, problem)`` from a model validator to name its key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from benchlab.errors import BenchlabError
from benchlab.yamlfile import load_yaml

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A YAML mapping: only its declared keys, values as declared, frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def expected(what: str, got: Any) -> PydanticCustomError:
    return PydanticCustomError("expected", "expected {what}, got {got}", {"what": what, "got": repr(got)})


def at(key: str, problem: str) -> PydanticCustomError:
    """A problem found by a rule over several keys, reported at ``key``."""
    return PydanticCustomError("at", "{problem}", {"key": key, "problem": problem})


def within(sub: str, problem: str) -> PydanticCustomError:
    """A problem a model's rule finds in one of its own keys (``sub``), reported there."""
    return PydanticCustomError("within", "{problem}", {"sub": sub, "problem": problem})


def wrong(problem: str) -> PydanticCustomError:
    """A value that is wrong in a way ``expected`` does not say, reported at its own key."""
    return PydanticCustomError("wrong", "{problem}", {"problem": problem})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _pos_int(v: Any) -> int:
    if not _is_int(v) or v < 1:
        raise expected("a positive integer", v)
    return v


def _number(positive: bool) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if not _is_number(v) or v < 0 or (positive and v == 0):
            raise expected("a positive number" if positive else "a number >= 0", v)
        return float(v)

    return check


def int_list(maximum: int | None = None) -> BeforeValidator:
    """A non-empty list of distinct positive integers (``maximum`` at most)."""
    what = "a list of positive integers" + (f" up to {maximum}" if maximum else "")

    def check(v: Any) -> tuple[int, ...]:
        if not isinstance(v, list) or not v:
            raise expected(what, v)
        for x in v:
            if not _is_int(x) or x < 1 or (maximum and x > maximum):
                raise expected(what, x)
        if len(set(v)) != len(v):
            raise expected(what + " without repeats", v)
        return tuple(v)

    return BeforeValidator(check)


def _num_list(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list):
        raise expected("a list of positive numbers", v)
    return tuple(_number(True)(x) for x in v)


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise expected("non-empty text", v)
    return v.strip()


PosInt = Annotated[int, BeforeValidator(_pos_int)]
PosNumber = Annotated[float, BeforeValidator(_number(True))]
NonNegNumber = Annotated[float, BeforeValidator(_number(False))]
NumList = Annotated[tuple[float, ...], BeforeValidator(_num_list)]
Text = Annotated[str, BeforeValidator(_text)]


def choice(allowed: tuple[str, ...], what: str = "one of") -> BeforeValidator:
    def check(v: Any) -> str:
        if v not in allowed:
            raise expected(f"{what} {', '.join(allowed)}", v)
        return v

    return BeforeValidator(check)


# --- reading a file -----------------------------------------------------------------------


def read_model(model: type[M], path: Path, data: Any = None, name: str | None = None) -> M:
    """``path`` (or ``data`` already read from it) validated as ``model``; any problem is one line."""
    name = name or path.name
    if data is None:
        data = load_yaml(path, name)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise one_line(name, model, exc) from None


_FIRST = {"extra_forbidden": 0, "missing": 1}  # as a reader checks: unknown keys, then missing ones


def one_line(
    name: str, model: type[BaseModel], exc: ValidationError, label: Callable[[tuple[Any, ...], str], str] | None = None
) -> BenchlabError:
    """The first problem (unknown keys first, then missing ones) as ``NAME: KEY: problem``;
    ``label`` may name a key better than its dotted path (a claim by its id)."""
    err = min(exc.errors(include_url=False), key=lambda e: _FIRST.get(e["type"], 2))
    loc, ctx, kind = tuple(err["loc"]), err.get("ctx") or {}, err["type"]
    if "[key]" in loc:  # a mapping's key is wrong: the mapping is where it goes wrong
        loc = loc[: loc.index("[key]") - 1]
    if ctx.get("sub"):  # a model's rule about one of its keys
        loc = (*loc, ctx["sub"])
    while loc and isinstance(loc[-1], int) and kind not in (*_FIRST, "model_type"):  # a list's item: the list
        loc = loc[:-1]
    key = ctx.get("key") or (label or (lambda where, _: dotted(where)))(loc, kind)
    if kind == "extra_forbidden":
        problem = f"unknown key; expected one of {', '.join(_fields_at(model, loc[:-1]))}"
    elif kind == "missing":
        problem = "required key missing"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        problem = f"expected a mapping, got {err['input']!r}"
    else:
        problem = err["msg"]
    return BenchlabError(f"{name}: {key or '(top level)'}: {problem}")


def dotted(loc: tuple[Any, ...]) -> str:
    """``("claims", 2, "checks", 0, "ratio")`` -> ``claims[2].checks[0].ratio``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model allows at ``loc`` (walking nested models, lists and mappings), its own
    before those it inherits (a scenario's ``name`` before the sweeps every test shares)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        if isinstance(part, int) or part not in current.model_fields:
            continue  # a list index or a mapping key: the same item model
        current = _inner_model(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        own = vars(current).get("__annotations__", {})
        return sorted(current.model_fields, key=lambda name: name not in own)
    return []


def _inner_model(annotation: Any) -> Any:
    """The model inside ``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", ())):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
