"""The sustainable rate: the highest offered rate a target served in full, with p99 under a bound.

This is what open-loop testing is for, and the figure a capacity planner needs: throughput at
saturation (the closed-loop peak) says nothing about the latency users see below it. A sweep
of offered rates (a scenario's ``open_loop.fractions`` of the closed-loop peak, or ``rates``)
is read per repeat from the lowest rate up; the sustainable rate is the last rate before the
first one that was overloaded (``measurement.MIN_DELIVERED_SHARE``/``MAX_DROPPED_SHARE``) or
whose p99 broke the bound. A step where the load generator was the limit ends the search
without a verdict on the server: the rate is then a lower bound, and says so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from benchlab.analysis.run import Run, lookup
from benchlab.config.scenario import DEFAULT_P99_MS
from benchlab.model.modes import LoadMode
from benchlab.model.step import Step


@dataclass(frozen=True)
class Sustainable:
    target: str
    test: str
    rps: float | None  # median over repeats of each repeat's sustainable rate; None: not even the lowest
    per_repeat: tuple[float | None, ...]
    limited_by: str  # "server", "client" (a lower bound) or "sweep" (every rate held: a lower bound)
    p99_bound_ms: float

    @property
    def text(self) -> str:
        if self.rps is None:
            return f"below the lowest rate tried (p99 ≤ {self.p99_bound_ms:g} ms)"
        at_least = "≥ " if self.limited_by != "server" else ""
        why = {"client": " (the load generator was the limit)", "sweep": " (every rate tried held)"}
        return f"{at_least}{self.rps:,.0f} req/s{why.get(self.limited_by, '')}"


def p99_bound_ms(run: Run) -> float:
    """The bound the run's scenario states (``open_loop.p99_ms``), else the default."""
    value = lookup(run.meta, "scenario", "open_loop", "p99_ms")
    return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_P99_MS


def sustainable_rate(run: Run, target: str, test: str) -> Sustainable | None:
    """None when the run has no open-loop steps for this target and test."""
    steps = [s for s in run.steps
             if (s.target, s.test, s.mode) == (target, test, LoadMode.OPEN) and s.level.offered_rps]  # fmt: skip
    if not steps:
        return None
    bound = p99_bound_ms(run)
    verdicts = [_one_repeat(sorted(group, key=lambda s: s.level.offered_rps or 0), bound)
                for group in _by_repeat(steps)]  # fmt: skip
    rates = [rate for rate, _ in verdicts]
    found = [r for r in rates if r is not None]
    limits = {why for _, why in verdicts}
    limited_by = "server" if "server" in limits else ("client" if "client" in limits else "sweep")
    return Sustainable(
        target=target,
        test=test,
        rps=statistics.median(found) if len(found) * 2 > len(rates) else None,
        per_repeat=tuple(rates),
        limited_by=limited_by,
        p99_bound_ms=bound,
    )


def _by_repeat(steps: list[Step]) -> list[list[Step]]:
    groups: dict[int, list[Step]] = {}
    for s in steps:
        groups.setdefault(s.repeat, []).append(s)
    return [groups[r] for r in sorted(groups)]


def _one_repeat(steps: list[Step], bound: float) -> tuple[float | None, str]:
    """(sustainable rate of one sweep, what ended it)."""
    best: float | None = None
    for s in steps:
        if s.client_bound:
            return best, "client"
        p99 = s.latency.get("latency_p99_ms")
        if not s.ok or s.overloaded or p99 is None or p99 > bound:
            return best, "server"
        best = s.level.offered_rps
    return best, "sweep"
