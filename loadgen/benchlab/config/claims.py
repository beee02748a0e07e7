"""Published performance claims as pydantic models, declared once: a baseline target, the
contenders compared with it, and checks. Each check is a ratio contender/baseline of one metric
(``rps`` or a latency column) on one test, at each target's peak, at every common level, or at
one named level, and the range that ratio must fall in. A target can first be taken over
itself: with ``relative_to``, its metric over its own on another test (what the test costs beyond
it); with ``across``, its metric at the last value of a swept axis over its own at the first (how
it scales: 2 workers against 1). The packaged file is ``claims.yaml``
beside this module (see it for the schema by example); ``analysis.claims`` gives the verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, model_validator

from benchlab.config.fields import PosNumber, Strict, Text, at, choice, dotted, expected, one_line, within, wrong
from benchlab.contract import TEST_TYPES, TESTS, TFB_TESTS, test_label
from benchlab.measurement import LATENCY_COLUMNS
from benchlab.model.level import AXIS_NAMES, AXIS_TITLE, LEVEL_DIMENSIONS
from benchlab.model.modes import MODE_ORDER, LoadMode
from benchlab.yamlfile import load_yaml

DEFAULT_CLAIMS = Path(__file__).with_name("claims.yaml")
METRICS: tuple[str, ...] = ("rps", *LATENCY_COLUMNS)
MODES: tuple[str, ...] = tuple(m.value for m in MODE_ORDER)  # counted modes: a profiled step is no measurement
AT = ("peak", "all")


def _test(v: Any) -> str:
    if v not in TESTS:
        raise wrong(f"unknown test {v!r} (known: {', '.join(TESTS)})")
    return v


def _metric(v: Any) -> str:
    if v not in METRICS:
        raise wrong(f"unknown metric {v!r} (known: {', '.join(METRICS)})")
    return v


def _target(v: Any) -> str:
    from benchlab.targets import registry_names

    if not isinstance(v, str) or not v.strip():
        raise expected("non-empty text", v)
    known = registry_names()
    if v.strip() not in known:
        raise wrong(f"unknown target {v.strip()!r} (known: {', '.join(known)})")
    return v.strip()


def _non_empty(what: str) -> BeforeValidator:
    def check(v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise expected(f"a non-empty list of {what}", v)
        return v

    return BeforeValidator(check)


def _pair(v: Any) -> Any:
    if not isinstance(v, list) or len(v) != 2:
        raise expected("[low, high]", v)
    return v


class Ratio(Strict):
    above: PosNumber | None = None
    below: PosNumber | None = None
    between: Annotated[tuple[PosNumber, PosNumber], BeforeValidator(_pair)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Ratio:
        given = [k for k in ("above", "below", "between") if getattr(self, k) is not None]
        if len(given) != 1:
            raise wrong("give exactly one of above, below, between")
        if self.between is not None and self.between[0] >= self.between[1]:
            low, high = self.between
            raise within("between", f"low {low:g} must be below high {high:g}")
        return self

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        return self.between if self.between is not None else (self.above, self.below)


class LevelFilter(Strict):
    concurrency: PosNumber | None = None
    pipeline: PosNumber | None = None
    queries: PosNumber | None = None
    offered_rps: PosNumber | None = None


class ClaimCheck(Strict):
    """One measurable part of a claim: contender/baseline of ``metric`` must lie in [low, high]."""

    test: Annotated[str, BeforeValidator(_test)]
    metric: Annotated[str, BeforeValidator(_metric)] = "rps"
    mode: Annotated[str, choice(MODES)] = LoadMode.CLOSED.value
    at: Annotated[str, choice(AT)] | None = None  # None with a level; else "peak" (the default) or "all"
    level: LevelFilter | None = None
    ratio: Ratio
    relative_to: Annotated[str, BeforeValidator(_test)] | None = None  # over each target's own on this test
    across: Annotated[str, choice(AXIS_NAMES)] | None = None  # last value of this axis over each target's first

    @model_validator(mode="before")
    @classmethod
    def _at_or_level(cls, data: Any) -> Any:
        if isinstance(data, dict) and "at" in data and "level" in data:
            raise within("level", "give either 'at' or 'level', not both")
        if isinstance(data, dict) and data.get("at", "peak") not in AT and "level" not in data:
            raise within("at", f"expected one of {', '.join(AT)} (or a 'level:' mapping instead), got {data['at']!r}")
        return data

    @model_validator(mode="after")
    def _level_named(self) -> ClaimCheck:
        if self.level is not None and not self.level_items:
            raise within("level", f"name at least one of {', '.join(LEVEL_DIMENSIONS)}")
        if self.relative_to is not None:
            if self.relative_to == self.test:
                raise within("relative_to", f"expected another test (known: {', '.join(TESTS)})")
            if self.across is not None:
                raise within("across", "give either 'relative_to' or 'across', not both")
        own = "relative_to" if self.relative_to is not None else "across" if self.across is not None else None
        if own is not None and self.where_kind != "peak":
            raise within(own, "compares each target's peaks: leave out 'at' and 'level'")
        return self

    @property
    def where_kind(self) -> str:
        """``peak``, ``all``, or ``level`` (then ``level_items`` names it)."""
        return "level" if self.level is not None else (self.at or "peak")

    @property
    def level_items(self) -> tuple[tuple[str, float], ...]:
        return tuple((k, v) for k in LEVEL_DIMENSIONS if self.level and (v := getattr(self.level, k)) is not None)

    @property
    def low(self) -> float | None:
        return self.ratio.bounds[0]

    @property
    def high(self) -> float | None:
        return self.ratio.bounds[1]

    @property
    def expectation(self) -> str:
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        return f"> {self.low:g}" if self.low is not None else f"< {self.high:g}"

    @property
    def where(self) -> str:
        if self.where_kind == "level":
            param = TEST_TYPES[self.test].param or "queries"  # a level's `queries` is the test's parameter
            return "at " + " ".join(f"{param if k == 'queries' else k}={v:g}" for k, v in self.level_items)
        return "at each target's peak" if self.where_kind == "peak" else "over all common levels"

    def describe(self) -> str:
        what = test_label(self.test) + (f" relative to {self.relative_to}" if self.relative_to else "")
        if self.across:
            what += f", last {AXIS_TITLE[self.across]} value over the first"
        return f"{what} ({self.mode}): {self.metric} ratio {self.expectation}, {self.where}"


class Claim(Strict):
    id: Text
    text: Text
    source: Text = ""
    workload: Text = ""  # what the claim is judged on, as the claims file names it
    baseline: Annotated[str, BeforeValidator(_target)]
    contenders: Annotated[tuple[Annotated[str, BeforeValidator(_target)], ...], _non_empty("target names")]
    checks: Annotated[tuple[ClaimCheck, ...], _non_empty("checks")]

    @model_validator(mode="after")
    def _baseline_apart(self) -> Claim:
        if self.baseline in self.contenders:
            raise within("contenders", f"{self.baseline!r} is also the baseline")
        return self

    @property
    def workload_label(self) -> str:
        """The workload as the report gives it with the verdict: a verdict on TechEmpower's
        tests alone says so, whatever the claim is about."""
        tests = list(dict.fromkeys(t for c in self.checks for t in (c.test, c.relative_to) if t))
        if all(t in TFB_TESTS for t in tests):
            return f"TechEmpower's tests only ({', '.join(tests)})" + (f": {self.workload}" if self.workload else "")
        return self.workload or ", ".join(map(test_label, tests))


class ClaimsFile(Strict):
    claims: tuple[Claim, ...]

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or not data["claims"]:
            raise at("claims", "expected a top-level 'claims:' list with at least one claim")
        return data

    @model_validator(mode="after")
    def _ids(self) -> ClaimsFile:
        ids = [c.id for c in self.claims]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise at("claims", f"id {dup!r} is used twice")
        return self


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims in ``path`` (default: the packaged file); any schema problem names file and key."""
    path = Path(path) if path is not None else DEFAULT_CLAIMS
    data = load_yaml(path, str(path))
    try:
        return list(ClaimsFile.model_validate(data).claims)
    except ValidationError as exc:
        raise one_line(str(path), ClaimsFile, exc, label=lambda loc, kind: _with_id(loc, kind, data)) from None


def _with_id(loc: tuple[Any, ...], kind: str, data: Any) -> str:
    """``claims[0] (c).checks[0].test``: a claim's keys carry its id once its own keys are there."""
    key = dotted(loc)
    if len(loc) < 3 or loc[0] != "claims" or not isinstance(loc[1], int):
        return key
    if len(loc) == 3 and kind in ("missing", "extra_forbidden"):
        return key
    try:
        claim_id = data["claims"][loc[1]]["id"]
    except (KeyError, IndexError, TypeError):
        return key
    head = dotted(loc[:2])
    return f"{head} ({claim_id}){key[len(head):]}" if isinstance(claim_id, str) else key

