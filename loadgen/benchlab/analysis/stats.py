"""Ratio estimates with intervals for the few repeats a benchmark lab can afford.

Throughput and latency are positive and their noise is multiplicative, so both tests
work on logarithms: a ratio becomes a difference of means, and scipy's t-test and
t-interval on it give a ratio interval that is honest at n=2..5 (a bootstrap would claim
too much there). Too few samples yield no interval at all, never a made-up one.

Two repeats per side leave Welch's t about one degree of freedom, and an interval as wide
as the t-quantile at 1 (12.7) makes it. Where one run measured a target at many points (tests
and levels), those points' repeats share the target's noise: ``pooled_spread`` estimates it
from all of them, and ``pooled_log_ratio`` uses each side's pooled spread with the degrees of
freedom it has (Welch–Satterthwaite), which assumes a target's relative noise is the same
on every test and level of the run.

Identical repeats on both sides (zero variance, e.g. a latency quantised to whole
milliseconds) leave no noise to estimate: the ratio is then exact, its interval is the
ratio itself and p is 1 when nothing changed, else 0. scipy would answer NaN there.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class RatioEstimate:
    """``b / a`` as a geometric-mean ratio, its interval and p-value (None when not computable)."""

    ratio: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n: str
    method: str
    note: str = ""

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def significant(self) -> bool:
        """Unadjusted: right for one test; a comparison of many rows adjusts with ``bh_adjust``."""
        return self.p_value is not None and self.p_value < ALPHA

    def interval_text(self, digits: int = 2) -> str:
        if not self.has_interval:
            return f"n/a ({self.note})" if self.note else "n/a"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _logs(values: Sequence[float]) -> list[float] | None:
    if any(v <= 0 for v in values):
        return None
    return [math.log(v) for v in values]


def _both_logs(
    a: Sequence[float], b: Sequence[float], n: str, method: str
) -> tuple[list[float], list[float]] | RatioEstimate:
    """Both sides' log values, or the estimate that says why there are none."""
    la, lb = _logs(a), _logs(b)
    if not a or not b:
        return RatioEstimate(None, None, None, None, n, method, "no samples")
    if la is None or lb is None:
        return RatioEstimate(None, None, None, None, n, method, "non-positive values")
    return la, lb


def welch_log_ratio(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> RatioEstimate:
    """Independent samples (repeats of two targets or two runs): Welch's t on log values."""
    n = f"{len(a)} vs {len(b)}"
    logs = _both_logs(a, b, n, "welch-log")
    if isinstance(logs, RatioEstimate):
        return logs
    la, lb = logs
    diff = statistics.fmean(lb) - statistics.fmean(la)
    if len(la) < 2 or len(lb) < 2:
        note = f"n={min(len(a), len(b))}, needs >=2 repeats"
        return RatioEstimate(math.exp(diff), None, None, None, n, "welch-log", note)
    if statistics.variance(la) == 0 and statistics.variance(lb) == 0:
        return _exact(diff, n, "welch-log")
    result = _quietly(sps.ttest_ind, lb, la, equal_var=False)
    return _estimate(diff, result, n, "welch-log", confidence)


@dataclass(frozen=True)
class Spread:
    """The between-repeat variance of log values, pooled over groups, with its degrees of freedom."""

    variance: float
    df: int


def pooled_spread(groups: Sequence[Sequence[float]]) -> Spread | None:
    """One variance from every group with >= 2 positive values (each group: repeats of one point);
    None when no group has two."""
    logged = [lg for g in groups if len(g) >= 2 and (lg := _logs(g)) is not None]
    df = sum(len(lg) - 1 for lg in logged)
    if df == 0:
        return None
    squares = sum((x - statistics.fmean(lg)) ** 2 for lg in logged for x in lg)
    return Spread(squares / df, df)


def pooled_log_ratio(
    a: Sequence[float], b: Sequence[float], spread_a: Spread | None, spread_b: Spread | None,
    confidence: float = CONFIDENCE,
) -> RatioEstimate:  # fmt: skip
    """``b / a`` from each side's own repeats, its interval from each side's pooled spread
    (see the module docstring); Welch's t on the repeats alone when a side has no pool."""
    if spread_a is None or spread_b is None:
        return welch_log_ratio(a, b, confidence)
    return _pooled_contrast([(spread_a, [a], []), (spread_b, [b], [])], confidence)


def pooled_ratio_of_ratios(
    a: tuple[Sequence[float], Sequence[float]], b: tuple[Sequence[float], Sequence[float]],
    spread_a: Spread | None, spread_b: Spread | None, confidence: float = CONFIDENCE,
) -> RatioEstimate:  # fmt: skip
    """``(b[1] / b[0]) / (a[1] / a[0])``: how each side changes from a reference point of its own
    (2 workers over 1, the 1,000th route over /json), side b against side a, each side's interval
    from its pooled spread. Welch's t on the per-repeat ratios when a side has no pool."""
    if spread_a is None or spread_b is None:
        per_repeat = [[y / x for x, y in zip(*side, strict=False) if x > 0] for side in (a, b)]
        return welch_log_ratio(per_repeat[0], per_repeat[1], confidence)
    return _pooled_contrast([(spread_a, [a[1]], [a[0]]), (spread_b, [b[1]], [b[0]])], confidence)


def _pooled_contrast(
    sides: Sequence[tuple[Spread, Sequence[Sequence[float]], Sequence[Sequence[float]]]], confidence: float
) -> RatioEstimate:
    """Side b over side a, each side its numerator groups over its denominator groups (geometric
    means); each side's variance from its pooled spread, the degrees of freedom of the two
    combined (Welch–Satterthwaite)."""
    groups = [g for _, up, down in sides for g in (*up, *down)]
    n = " vs ".join(str(len(g)) for g in groups)
    if not all(groups):
        return RatioEstimate(None, None, None, None, n, "pooled-log", "no samples")
    if any(_logs(g) is None for g in groups):
        return RatioEstimate(None, None, None, None, n, "pooled-log", "non-positive values")

    def mean_log(gs: Sequence[Sequence[float]]) -> float:
        return sum(statistics.fmean(map(math.log, g)) for g in gs)

    (_, up_a, down_a), (_, up_b, down_b) = sides
    diff = (mean_log(up_b) - mean_log(down_b)) - (mean_log(up_a) - mean_log(down_a))
    terms = [(sp.variance * sum(1 / len(g) for g in (*up, *down)), sp.df) for sp, up, down in sides]
    total = sum(v for v, _ in terms)
    if total == 0:
        return _exact(diff, n, "pooled-log")
    df = total**2 / sum(v**2 / d for v, d in terms)
    se = math.sqrt(total)
    half = float(sps.t.ppf(1 - (1 - confidence) / 2, df)) * se
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    return RatioEstimate(math.exp(diff), math.exp(diff - half), math.exp(diff + half), p, n, "pooled-log")


def paired_log_ratio(
    pairs: Sequence[tuple[float, float]], confidence: float = CONFIDENCE, min_pairs: int = 3
) -> RatioEstimate:
    """Matched samples (the same load level on two targets): paired t on log values."""
    n = f"{len(pairs)} pairs"
    if not pairs:
        return RatioEstimate(None, None, None, None, n, "paired-log", "no common levels")
    if any(a <= 0 or b <= 0 for a, b in pairs):
        return RatioEstimate(None, None, None, None, n, "paired-log", "non-positive values")
    la, lb = [math.log(a) for a, _ in pairs], [math.log(b) for _, b in pairs]
    diffs = [y - x for x, y in zip(la, lb, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < min_pairs:
        note = f"{len(diffs)} pairs, needs >={min_pairs}"
        return RatioEstimate(math.exp(mean), None, None, None, n, "paired-log", note)
    if statistics.variance(diffs) == 0:
        return _exact(mean, n, "paired-log")
    return _estimate(mean, _quietly(sps.ttest_rel, lb, la), n, "paired-log", confidence)


def bh_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (q), in order; None (no test made) stays None.

    One comparison makes dozens of tests, so at α = 5 % some raw "significant" changes are
    chance; calling a change significant only when q < α keeps the expected share of false
    discoveries among those called significant at 5 % (the false discovery rate).
    """
    made = [p for p in p_values if p is not None]
    if not made:
        return [None] * len(p_values)
    adjusted = iter(float(q) for q in sps.false_discovery_control(made))
    return [None if p is None else next(adjusted) for p in p_values]


def _quietly(test: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a scipy test without its "catastrophic cancellation" warning: repeats that are
    identical on one side have an exactly zero spread, which Welch's t handles correctly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return test(*args, **kwargs)


def _estimate(diff: float, result: Any, n: str, method: str, confidence: float) -> RatioEstimate:
    """A scipy t-test on log values back on the ratio scale: exp of the mean difference and its interval."""
    ci = result.confidence_interval(confidence_level=confidence)
    return RatioEstimate(
        math.exp(diff), math.exp(float(ci.low)), math.exp(float(ci.high)), float(result.pvalue), n, method
    )


def _exact(diff: float, n: str, method: str) -> RatioEstimate:
    """No spread in the repeats: the difference is exact, not estimated (see the module docstring)."""
    ratio = math.exp(diff)
    return RatioEstimate(ratio, ratio, ratio, 1.0 if diff == 0 else 0.0, n, method)
