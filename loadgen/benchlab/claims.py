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

from benchlab.analysis.run import Point, Run, target_order
from benchlab.analysis.stats import RatioEstimate, paired_log_ratio, pooled_log_ratio
from benchlab.contract import TESTS
from benchlab.measurement import LATENCY_COLUMNS
from benchlab.model.level import LEVEL_DIMENSIONS, Level
from benchlab.model.modes import LoadMode
from benchlab.validate import Checker
from benchlab.yamlfile import load_yaml

DEFAULT_CLAIMS = Path(__file__).with_name("claims.yaml")
METRICS: tuple[str, ...] = ("rps", *LATENCY_COLUMNS)
LEVEL_KEYS: tuple[str, ...] = LEVEL_DIMENSIONS
MODES: tuple[str, ...] = tuple(LoadMode)
AT = ("peak", "all")
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"

CLAIM_KEYS = ("id", "text", "source", "baseline", "contenders", "checks")
CHECK_KEYS = ("test", "metric", "mode", "at", "level", "ratio")


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
    data = load_yaml(path, str(path))
    c = Checker(str(path))
    if not isinstance(data, Mapping) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise c.error("claims", "expected a top-level 'claims:' list with at least one claim")
    known = target_order()
    claims = [_claim(c, item, f"claims[{i}]", known) for i, item in enumerate(data["claims"])]
    ids = [claim.id for claim in claims]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise c.error("claims", f"id {dup!r} is used twice")
    return claims


def _target(c: Checker, value: Any, key: str, known: Sequence[str]) -> str:
    name = c.text(value, key)
    if name not in known:
        raise c.error(key, f"unknown target {name!r} (known: {', '.join(known)})")
    return name


def _claim(c: Checker, item: Any, key: str, known: Sequence[str]) -> Claim:
    m = c.mapping(item, key, CLAIM_KEYS, ("id", "text", "baseline", "contenders", "checks"))
    claim_id = c.text(m["id"], f"{key}.id")
    key = f"{key} ({claim_id})"
    baseline = _target(c, m["baseline"], f"{key}.baseline", known)
    contenders = c.items(m["contenders"], f"{key}.contenders", "target names")
    names = tuple(_target(c, t, f"{key}.contenders[{i}]", known) for i, t in enumerate(contenders))
    if baseline in names:
        raise c.error(f"{key}.contenders", f"{baseline!r} is also the baseline")
    checks = c.items(m["checks"], f"{key}.checks", "checks")
    return Claim(
        id=claim_id,
        text=c.text(m["text"], f"{key}.text"),
        source=c.text(m["source"], f"{key}.source") if m.get("source") is not None else "",
        baseline=baseline,
        contenders=names,
        checks=tuple(_check(c, item, f"{key}.checks[{i}]") for i, item in enumerate(checks)),
    )


def _check(c: Checker, item: Any, key: str) -> ClaimCheck:
    m = c.mapping(item, key, CHECK_KEYS, ("test", "ratio"))
    test = m["test"]
    if test not in TESTS:
        raise c.error(f"{key}.test", f"unknown test {test!r} (known: {', '.join(TESTS)})")
    metric = m.get("metric", "rps")
    if metric not in METRICS:
        raise c.error(f"{key}.metric", f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    mode = c.choice(m.get("mode", LoadMode.CLOSED.value), f"{key}.mode", MODES)
    level: tuple[tuple[str, float], ...] = ()
    if "level" in m:
        if "at" in m:
            raise c.error(f"{key}.level", "give either 'at' or 'level', not both")
        lv = c.mapping(m["level"], f"{key}.level", LEVEL_KEYS)
        if not lv:
            raise c.error(f"{key}.level", f"name at least one of {', '.join(LEVEL_KEYS)}")
        level = tuple((k, c.number(lv[k], f"{key}.level.{k}", positive=True)) for k in LEVEL_KEYS if k in lv)
        at = "level"
    else:
        at = m.get("at", "peak")
        if at not in AT:
            raise c.fail(f"{key}.at", f"one of {', '.join(AT)} (or a 'level:' mapping instead)", at)
    low, high = _ratio(c, m["ratio"], f"{key}.ratio")
    return ClaimCheck(test=test, metric=metric, mode=mode, at=at, level=level, low=low, high=high)


def _ratio(c: Checker, value: Any, key: str) -> tuple[float | None, float | None]:
    m = c.mapping(value, key, ("above", "below", "between"))
    if len(m) != 1:
        raise c.error(key, "give exactly one of above, below, between")
    if "above" in m:
        return c.number(m["above"], f"{key}.above", positive=True), None
    if "below" in m:
        return None, c.number(m["below"], f"{key}.below", positive=True)
    pair = m["between"]
    if not isinstance(pair, list) or len(pair) != 2:
        raise c.fail(f"{key}.between", "[low, high]", pair)
    low, high = (c.number(v, f"{key}.between", positive=True) for v in pair)
    if low >= high:
        raise c.error(f"{key}.between", f"low {low:g} must be below high {high:g}")
    return low, high


# ---------------------------------------------------------------- evaluation


def evaluate_claims(run: Run, claims: Sequence[Claim]) -> list[PairingResult]:
    """Every claim for every contender named in it that the run measured with its baseline, in
    file order (``unmeasured`` lists the claims this leaves out)."""
    return [
        PairingResult(claim, contender, tuple(_evaluate(run, claim.baseline, contender, c) for c in claim.checks))
        for claim in claims
        for contender in claim.contenders
        if {claim.baseline, contender} <= set(run.targets)
    ]


def unmeasured(run: Run, claims: Sequence[Claim]) -> list[tuple[Claim, list[str]]]:
    """The claims with no pairing in the run, each with the targets it lacked."""
    out = []
    for claim in claims:
        needed = [claim.baseline, *claim.contenders]
        if not any({claim.baseline, c} <= set(run.targets) for c in claim.contenders):
            out.append((claim, [t for t in needed if t not in run.targets]))
    return out


def _evaluate(run: Run, baseline: str, contender: str, check: ClaimCheck) -> CheckResult:
    missing = [t for t in (baseline, contender) if not run.points_for(t, check.test, check.mode)]
    if missing:
        note = f"no successful {check.test} ({check.mode}) steps for {', '.join(missing)}"
        return CheckResult(check, None, INCONCLUSIVE, note, ())
    if check.at == "peak":
        a, b = run.peak(baseline, check.test, check.mode), run.peak(contender, check.test, check.mode)
        assert a is not None and b is not None
        return _judge(check, _point_ratio(run, a, b, check), [a, b])
    if check.at == "level":
        chosen = [_at_level(run, t, check) for t in (baseline, contender)]
        problem = next((p for p in chosen if isinstance(p, str)), None)
        if problem is not None:
            return CheckResult(check, None, INCONCLUSIVE, problem, ())
        a, b = chosen
        assert isinstance(a, Point) and isinstance(b, Point)
        return _judge(check, _point_ratio(run, a, b, check), [a, b])
    base = {p.level: p for p in run.points_for(baseline, check.test, check.mode)}
    cont = {p.level: p for p in run.points_for(contender, check.test, check.mode)}
    common: list[Level] = [lv for lv in base if lv in cont]
    pairs = [pair for lv in common for pair in _repeat_pairs(base[lv], cont[lv], check.metric)]
    used = [base[lv] for lv in common] + [cont[lv] for lv in common]
    return _judge(check, paired_log_ratio(pairs), used)


def _point_ratio(run: Run, a: Point, b: Point, check: ClaimCheck) -> RatioEstimate:
    """``b / a`` in the check's metric, its interval from each target's noise over the run
    (``Run.spread``), as the report's leads and decomposition have theirs."""
    spread_a, spread_b = (run.spread(p.target, check.metric, check.mode) for p in (a, b))
    return pooled_log_ratio(a.metric_samples(check.metric), b.metric_samples(check.metric), spread_a, spread_b)


def _at_level(run: Run, target: str, check: ClaimCheck) -> Point | str:
    matches = [
        p
        for p in run.points_for(target, check.test, check.mode)
        if all(p.level.value(k) == v for k, v in check.level)
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
