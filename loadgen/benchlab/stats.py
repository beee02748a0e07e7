"""Ratio estimates with intervals for the few repeats a benchmark lab can afford.

Throughput and latency are positive and their noise is multiplicative, so both tests
work on logarithms: a ratio becomes a difference of means, and a t-interval on it gives
a ratio interval that is honest at n=2..5 (a bootstrap would claim too much there).
Too few samples yield no interval at all, never a made-up one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

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
        return self.p_value is not None and self.p_value < ALPHA

    def interval_text(self, digits: int = 2) -> str:
        if not self.has_interval:
            return f"n/a ({self.note})" if self.note else "n/a"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _logs(values: Sequence[float]) -> list[float] | None:
    if any(v <= 0 for v in values):
        return None
    return [math.log(v) for v in values]


def welch_log_ratio(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> RatioEstimate:
    """Independent samples (repeats of two targets or two runs): Welch's t on log values."""
    n = f"{len(a)} vs {len(b)}"
    la, lb = _logs(a), _logs(b)
    if not a or not b:
        return RatioEstimate(None, None, None, None, n, "welch-log", "no samples")
    if la is None or lb is None:
        return RatioEstimate(None, None, None, None, n, "welch-log", "non-positive values")
    diff = statistics.fmean(lb) - statistics.fmean(la)
    ratio = math.exp(diff)
    if len(la) < 2 or len(lb) < 2:
        return RatioEstimate(ratio, None, None, None, n, "welch-log", f"n={min(len(a), len(b))}, needs >=2 repeats")
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    se = math.sqrt(va + vb)
    if se == 0:
        # Identical repeats on both sides: the difference is exact, not estimated.
        return RatioEstimate(ratio, ratio, ratio, 1.0 if diff == 0 else 0.0, n, "welch-log")
    df = (va + vb) ** 2 / (va**2 / (len(la) - 1) + vb**2 / (len(lb) - 1))
    return _t_result(diff, se, df, n, "welch-log", confidence)


def paired_log_ratio(
    pairs: Sequence[tuple[float, float]], confidence: float = CONFIDENCE, min_pairs: int = 3
) -> RatioEstimate:
    """Matched samples (the same load level on two targets): one-sample t on log(b/a)."""
    n = f"{len(pairs)} pairs"
    if not pairs:
        return RatioEstimate(None, None, None, None, n, "paired-log", "no common levels")
    if any(a <= 0 or b <= 0 for a, b in pairs):
        return RatioEstimate(None, None, None, None, n, "paired-log", "non-positive values")
    diffs = [math.log(b) - math.log(a) for a, b in pairs]
    mean = statistics.fmean(diffs)
    if len(diffs) < min_pairs:
        return RatioEstimate(
            math.exp(mean), None, None, None, n, "paired-log", f"{len(diffs)} levels, needs >={min_pairs}"
        )
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    if se == 0:
        r = math.exp(mean)
        return RatioEstimate(r, r, r, 1.0 if mean == 0 else 0.0, n, "paired-log")
    return _t_result(mean, se, len(diffs) - 1, n, "paired-log", confidence)


def _t_result(diff: float, se: float, df: float, n: str, method: str, confidence: float) -> RatioEstimate:
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * sps.t.sf(abs(diff / se), df))
    return RatioEstimate(math.exp(diff), math.exp(diff - half), math.exp(diff + half), p, n, method)
