"""Published claims judged against a run: each check's ratio contender/baseline with its
interval, and a verdict (the claims themselves: ``config.claims``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchlab.analysis.run import Point, Run
from benchlab.analysis.scaling import along
from benchlab.analysis.stats import RatioEstimate, paired_log_ratio, pooled_log_ratio, pooled_ratio_of_ratios
from benchlab.config.claims import Claim, ClaimCheck
from benchlab.model.level import AXIS_TITLE, LEVEL_DIMENSIONS, Level

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


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

    def split(self) -> str:
        """Where the claim holds on one workload and not on another, which ones; else ""."""
        held = [r.check.describe() for r in self.results if r.verdict == HOLDS]
        failed = [r.check.describe() for r in self.results if r.verdict == FAILS]
        if not (held and failed):
            return ""
        return f"holds on {'; '.join(held)}, but does not hold on {'; '.join(failed)}"

    @property
    def verdict(self) -> str:
        verdicts = {r.verdict for r in self.results}
        if FAILS in verdicts:
            return FAILS
        return HOLDS if verdicts == {HOLDS} else INCONCLUSIVE


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
    if check.relative_to or check.across:
        return _over_own(run, baseline, contender, check)
    if check.where_kind == "peak":
        a, b = run.peak(baseline, check.test, check.mode), run.peak(contender, check.test, check.mode)
        assert a is not None and b is not None
        return _judge(check, _point_ratio(run, a, b, check), [a, b])
    if check.where_kind == "level":
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


def _over_own(run: Run, baseline: str, contender: str, check: ClaimCheck) -> CheckResult:
    """Each target's metric over its own reference, contender against baseline, so how fast each
    framework is anyway cancels out: ``relative_to`` what the test costs beyond another (the
    1,000th route against /json), ``across`` how it scales along an axis. The interval takes each
    target's noise over the run, as ``_point_ratio`` does."""
    sides, points = [], []
    for target in (baseline, contender):
        pair = _own_pair(run, target, check)
        if isinstance(pair, str):
            return CheckResult(check, None, INCONCLUSIVE, pair, ())
        ref, p = pair
        paired = _repeat_pairs(ref, p, check.metric)
        sides.append(([r for r, _ in paired], [v for _, v in paired]))
        points += [p, ref]
    spreads = [run.spread(t, check.metric, check.mode) for t in (baseline, contender)]
    return _judge(check, pooled_ratio_of_ratios(sides[0], sides[1], *spreads), points)


def _own_pair(run: Run, target: str, check: ClaimCheck) -> tuple[Point, Point] | str:
    """(reference, point) for ``_over_own``, or why there is none. ``relative_to``: the peak on
    the test over the other test at the same connections and pipeline if measured there, else
    its peak. ``across``: the peak at the axis's last value over the peak at its first."""
    if check.across:
        found = along(run, check.across, target, check.test, check.mode)
        if len(found) < 2:
            return f"{target} has {check.test} peaks at {len(found)} {AXIS_TITLE[check.across]} value(s), not 2 or more"
        return found[0][1], found[-1][1]
    assert check.relative_to is not None
    p = run.peak(target, check.test, check.mode)
    refs = run.points_for(target, check.relative_to, check.mode)
    same = [r for r in refs if p is not None and _connections(r) == _connections(p)]
    ref = same[0] if same else run.peak(target, check.relative_to, check.mode)
    if p is None or ref is None:
        return f"no successful {check.relative_to} steps for {target}"
    return ref, p


def _connections(p: Point) -> tuple[int | None, int | None]:
    return p.level.concurrency, p.level.pipeline


def _point_ratio(run: Run, a: Point, b: Point, check: ClaimCheck) -> RatioEstimate:
    """``b / a`` in the check's metric, its interval from each target's noise over the run
    (``Run.spread``), as the report's leads and decomposition have theirs."""
    spread_a, spread_b = (run.spread(p.target, check.metric, check.mode) for p in (a, b))
    return pooled_log_ratio(a.metric_samples(check.metric), b.metric_samples(check.metric), spread_a, spread_b)


def _at_level(run: Run, target: str, check: ClaimCheck) -> Point | str:
    matches = [
        p
        for p in run.points_for(target, check.test, check.mode)
        if all(p.level.value(k) == v for k, v in check.level_items)
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return f"{target} has no successful step {check.where}"
    return f"{check.where} matches {len(matches)} levels of {target}: name more of {', '.join(LEVEL_DIMENSIONS)}"


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
