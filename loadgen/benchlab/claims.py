"""Published performance claims, checked against a run: stated, measured, and given a verdict.

A claim names a baseline target, the contenders it is compared with, and checks. Each
check is a ratio contender/baseline of one metric (``rps`` or a latency column) on one
test, at each target's peak, at every common level, or at one named level, and the range
that ratio must fall in. The claims file is ``claims.yaml`` beside this module unless the
user names their own; see that file for the schema by example.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchlab.contract import TESTS
from benchlab.errors import BenchlabError
from benchlab.rundata import LATENCY_COLUMNS, Level, Point, Run, level_value, target_order
from benchlab.stats import RatioEstimate, paired_log_ratio, welch_log_ratio

DEFAULT_CLAIMS = Path(__file__).with_name("claims.yaml")
METRICS: tuple[str, ...] = ("rps", *LATENCY_COLUMNS)
LEVEL_KEYS: tuple[str, ...] = ("concurrency", "pipeline", "queries", "offered_rps")
MODES = ("closed", "open")
AT = ("peak", "all")
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"

CLAIM_KEYS = {"id", "text", "source", "baseline", "contenders", "checks"}
CHECK_KEYS = {"test", "metric", "mode", "at", "level", "ratio"}


@dataclass(frozen=True)
class ClaimCheck:
    """One measurable part of a claim: contender/baseline of ``metric`` must lie in [low, high]."""

    test: str
    metric: str
    mode: str
    at: str  # "peak", "all", or "level" (then ``level`` names it)
    level: tuple[tuple[str, float], ...]
    low: float | None
    high: float | None

    @property
    def expectation(self) -> str:
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        return f"> {self.low:g}" if self.low is not None else f"< {self.high:g}"

    @property
    def where(self) -> str:
        if self.at == "level":
            return "at " + " ".join(f"{k}={v:g}" for k, v in self.level)
        return "at each target's peak" if self.at == "peak" else "over all common levels"

    def describe(self) -> str:
        return f"{self.test} ({self.mode}): {self.metric} ratio {self.expectation}, {self.where}"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    baseline: str
    contenders: tuple[str, ...]
    checks: tuple[ClaimCheck, ...]


@dataclass(frozen=True)
class CheckResult:
    check: ClaimCheck
    estimate: RatioEstimate | None
    verdict: str
    note: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class PairingResult:
    """A claim judged for one contender against its baseline: all checks must hold."""

    claim: Claim
    contender: str
    results: tuple[CheckResult, ...]

    @property
    def verdict(self) -> str:
        verdicts = {r.verdict for r in self.results}
        if FAILS in verdicts:
            return FAILS
        return HOLDS if verdicts == {HOLDS} else INCONCLUSIVE


# ---------------------------------------------------------------- loading and validation


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims in ``path`` (default: the packaged file); any schema problem names file and key."""
    path = Path(path) if path is not None else DEFAULT_CLAIMS
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchlabError(f"cannot read claims file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise BenchlabError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise BenchlabError(f"{path}: claims: expected a top-level 'claims:' list with at least one claim")
    known = target_order()
    claims = [_claim(item, f"claims[{i}]", path, known) for i, item in enumerate(data["claims"])]
    ids = [c.id for c in claims]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise BenchlabError(f"{path}: claims: id {dup!r} is used twice")
    return claims


def _fail(path: Path, key: str, problem: str) -> BenchlabError:
    return BenchlabError(f"{path}: {key}: {problem}")


def _mapping(value: Any, allowed: set[str], key: str, path: Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, key, "expected a mapping")
    extra = sorted(set(map(str, value)) - allowed)
    if extra:
        raise _fail(path, f"{key}.{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _text(value: Any, key: str, path: Path, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, "expected non-empty text")
    return value.strip()


def _target(value: Any, key: str, path: Path, known: Sequence[str]) -> str:
    name = _text(value, key, path)
    if name not in known:
        raise _fail(path, key, f"unknown target {name!r} (known: {', '.join(known)})")
    return name


def _positive(value: Any, key: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise _fail(path, key, f"expected a positive number, got {value!r}")
    return float(value)


def _claim(item: Any, key: str, path: Path, known: Sequence[str]) -> Claim:
    m = _mapping(item, CLAIM_KEYS, key, path)
    for required in ("id", "text", "baseline", "contenders", "checks"):
        if required not in m:
            raise _fail(path, f"{key}.{required}", "missing")
    claim_id = _text(m["id"], f"{key}.id", path)
    key = f"{key} ({claim_id})"
    baseline = _target(m["baseline"], f"{key}.baseline", path, known)
    contenders = m["contenders"]
    if not isinstance(contenders, list) or not contenders:
        raise _fail(path, f"{key}.contenders", "expected a non-empty list of target names")
    names = tuple(_target(c, f"{key}.contenders[{i}]", path, known) for i, c in enumerate(contenders))
    if baseline in names:
        raise _fail(path, f"{key}.contenders", f"{baseline!r} is also the baseline")
    checks = m["checks"]
    if not isinstance(checks, list) or not checks:
        raise _fail(path, f"{key}.checks", "expected a non-empty list of checks")
    return Claim(
        id=claim_id,
        text=_text(m["text"], f"{key}.text", path),
        source=_text(m.get("source"), f"{key}.source", path, required=False),
        baseline=baseline,
        contenders=names,
        checks=tuple(_check(c, f"{key}.checks[{i}]", path) for i, c in enumerate(checks)),
    )


def _check(item: Any, key: str, path: Path) -> ClaimCheck:
    m = _mapping(item, CHECK_KEYS, key, path)
    for required in ("test", "ratio"):
        if required not in m:
            raise _fail(path, f"{key}.{required}", "missing")
    test = m["test"]
    if test not in TESTS:
        raise _fail(path, f"{key}.test", f"unknown test {test!r} (known: {', '.join(TESTS)})")
    metric = m.get("metric", "rps")
    if metric not in METRICS:
        raise _fail(path, f"{key}.metric", f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    mode = m.get("mode", "closed")
    if mode not in MODES:
        raise _fail(path, f"{key}.mode", f"expected one of {', '.join(MODES)}")
    level: tuple[tuple[str, float], ...] = ()
    if "level" in m:
        if "at" in m:
            raise _fail(path, f"{key}.level", "give either 'at' or 'level', not both")
        lv = _mapping(m["level"], set(LEVEL_KEYS), f"{key}.level", path)
        if not lv:
            raise _fail(path, f"{key}.level", f"name at least one of {', '.join(LEVEL_KEYS)}")
        level = tuple((k, _positive(lv[k], f"{key}.level.{k}", path)) for k in LEVEL_KEYS if k in lv)
        at = "level"
    else:
        at = m.get("at", "peak")
        if at not in AT:
            raise _fail(path, f"{key}.at", f"expected one of {', '.join(AT)} (or a 'level:' mapping instead)")
    low, high = _ratio(m["ratio"], f"{key}.ratio", path)
    return ClaimCheck(test=test, metric=metric, mode=mode, at=at, level=level, low=low, high=high)


def _ratio(value: Any, key: str, path: Path) -> tuple[float | None, float | None]:
    m = _mapping(value, {"above", "below", "between"}, key, path)
    if len(m) != 1:
        raise _fail(path, key, "give exactly one of above, below, between")
    if "above" in m:
        return _positive(m["above"], f"{key}.above", path), None
    if "below" in m:
        return None, _positive(m["below"], f"{key}.below", path)
    pair = m["between"]
    if not isinstance(pair, list) or len(pair) != 2:
        raise _fail(path, f"{key}.between", "expected [low, high]")
    low, high = (_positive(v, f"{key}.between", path) for v in pair)
    if low >= high:
        raise _fail(path, f"{key}.between", f"low {low:g} must be below high {high:g}")
    return low, high


# ---------------------------------------------------------------- evaluation


def evaluate_claims(run: Run, claims: Sequence[Claim]) -> list[PairingResult]:
    """Every claim for every contender named in it, in file order."""
    return [
        PairingResult(claim, contender, tuple(_evaluate(run, claim.baseline, contender, c) for c in claim.checks))
        for claim in claims
        for contender in claim.contenders
    ]


def _evaluate(run: Run, baseline: str, contender: str, check: ClaimCheck) -> CheckResult:
    missing = [t for t in (baseline, contender) if not run.points_for(t, check.test, check.mode)]
    if missing:
        note = f"no successful {check.test} ({check.mode}) steps for {', '.join(missing)}"
        return CheckResult(check, None, INCONCLUSIVE, note, ())
    if check.at == "peak":
        a, b = run.peak(baseline, check.test, check.mode), run.peak(contender, check.test, check.mode)
        assert a is not None and b is not None
        return _judge(check, welch_log_ratio(a.metric_samples(check.metric), b.metric_samples(check.metric)), [a, b])
    if check.at == "level":
        chosen = [_at_level(run, t, check) for t in (baseline, contender)]
        problem = next((p for p in chosen if isinstance(p, str)), None)
        if problem is not None:
            return CheckResult(check, None, INCONCLUSIVE, problem, ())
        a, b = chosen
        assert isinstance(a, Point) and isinstance(b, Point)
        return _judge(check, welch_log_ratio(a.metric_samples(check.metric), b.metric_samples(check.metric)), [a, b])
    base = {p.level: p for p in run.points_for(baseline, check.test, check.mode)}
    cont = {p.level: p for p in run.points_for(contender, check.test, check.mode)}
    common: list[Level] = [lv for lv in base if lv in cont]
    pairs = [pair for lv in common for pair in _repeat_pairs(base[lv], cont[lv], check.metric)]
    used = [base[lv] for lv in common] + [cont[lv] for lv in common]
    return _judge(check, paired_log_ratio(pairs), used)


def _at_level(run: Run, target: str, check: ClaimCheck) -> Point | str:
    matches = [
        p
        for p in run.points_for(target, check.test, check.mode)
        if all(level_value(p.level, k) == v for k, v in check.level)
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return f"{target} has no successful step {check.where}"
    return f"{check.where} matches {len(matches)} levels of {target}: name more of {', '.join(LEVEL_KEYS)}"


def _repeat_pairs(a: Point, b: Point, metric: str) -> list[tuple[float, float]]:
    """Values of the same repeat number on both sides: the runs of one round share conditions."""
    va = {s.repeat: v for s in a.steps if (v := s.value(metric)) is not None}
    vb = {s.repeat: v for s in b.steps if (v := s.value(metric)) is not None}
    return [(va[r], vb[r]) for r in sorted(va) if r in vb]


def _judge(check: ClaimCheck, estimate: RatioEstimate, points: Sequence[Point]) -> CheckResult:
    flags = tuple(sorted({f"{p.target} {p.label}: {', '.join(p.flags)}" for p in points if p.flags}))
    if not estimate.has_interval:
        return CheckResult(check, estimate, INCONCLUSIVE, f"too few samples: {estimate.note}", flags)
    assert estimate.low is not None and estimate.high is not None
    low = check.low if check.low is not None else -math.inf
    high = check.high if check.high is not None else math.inf
    if low < estimate.low and estimate.high < high:
        verdict = HOLDS
    elif estimate.high <= low or estimate.low >= high:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    note = "interval overlaps the claimed range's edge" if verdict == INCONCLUSIVE else ""
    return CheckResult(check, estimate, verdict, note, flags)
