"""Concurrency sweeps: how throughput and p99 hold up as connections grow (the ``concurrency``
scenario's question), and the connection errors and timeouts at each level, as findings.

Read from the run's steps rather than its points: a level where more than 1 % of requests
failed is not a measurement (``status.judge``) and so is in no point, yet it is the answer the
sweep is for, so every closed-loop step counts here, its figures shown with its status beside
them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from benchlab.analysis.run import Run
from benchlab.contract import test_label
from benchlab.measurement import ERROR_KINDS
from benchlab.model.level import Axes
from benchlab.model.modes import LoadMode
from benchlab.model.status import Status
from benchlab.model.step import Step

MIN_LEVELS = 3  # a target x test run at this many connection counts or more is a sweep
KIND_WORDS = {"connect": "connect errors", "read": "read errors", "write": "write errors", "timeout": "timeouts",
              "status": "non-2xx answers"}  # fmt: skip


@dataclass(frozen=True)
class Level:
    """One connection count of a sweep, its repeats summarised."""

    connections: int
    rps: float | None  # median over repeats with figures
    p99_ms: float | None
    requests: int
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count, summed over repeats
    status: str = "pass"  # the worst of its repeats

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class Sweep:
    target: str
    test: str
    queries: int | None
    levels: tuple[Level, ...]
    setup: str = ""  # the swept axes' values, when the run swept any (``w=2``)

    @property
    def label(self) -> str:
        parameter = f", parameter {self.queries}" if self.queries is not None else ""
        return test_label(self.test) + parameter + (f" ({self.setup})" if self.setup else "")

    def findings(self) -> list[str]:
        """One line per level with connection errors, timeouts or error answers, or no response at all
        (requests still queued when the step ended are neither answered nor timed out)."""
        out = []
        for lv in self.levels:
            if not lv.requests and not lv.error_total:  # every request still waiting when the step ended
                where = f"{self.target}, {self.label}, at {lv.connections:,} connections"
                out.append(f"{where}: no response within the step")
            if lv.error_total:
                kinds = ", ".join(f"{n:,} {KIND_WORDS[k]}" for k, n in lv.errors.items() if n)
                share = f" ({100 * lv.error_total / max(lv.requests + lv.error_total, 1):.1f} % of requests)"
                out.append(f"{self.target}, {self.label}, at {lv.connections:,} connections: {kinds}{share}")
        return out

    def holds_up(self) -> str:
        """Throughput and p99 at the most connections against the fewest."""
        first, last = self.levels[0], self.levels[-1]
        if not first.rps or last.rps is None:  # nothing served at the fewest connections: no base
            return "no throughput at one end of the sweep to compare"
        text = f"{last.rps / first.rps:.2f}x the throughput"
        if first.p99_ms and last.p99_ms:
            text += f", {last.p99_ms / first.p99_ms:.1f}x the p99"
        return f"{text} at {last.connections:,} connections against {first.connections:,}"


def concurrency_sweeps(run: Run) -> list[Sweep]:
    """Every closed-loop target x test x parameter x setup run at MIN_LEVELS connection counts or more."""
    groups: dict[tuple[str, str, int | None, Axes], dict[int, list[Step]]] = defaultdict(lambda: defaultdict(list))
    for step in run.steps:  # every row, measured or not
        if step.mode != LoadMode.CLOSED or step.level.concurrency is None:
            continue
        groups[(step.target, step.test, step.level.queries, step.axes)][step.level.concurrency].append(step)
    sweeps = []
    for (target, test, queries, axes), by_level in groups.items():
        if len(by_level) < MIN_LEVELS:
            continue
        levels = tuple(_level(c, steps) for c, steps in sorted(by_level.items()))
        sweeps.append(Sweep(target, test, queries, levels, axes.label(run.varying_axes)))
    return sweeps


_WORST = (Status.ERROR, Status.FAIL, Status.INVALID, Status.SKIPPED, Status.WARN, Status.PASS)


def _level(connections: int, steps: list[Step]) -> Level:
    rps = [s.rps for s in steps if s.rps is not None]
    p99 = [v for s in steps if (v := s.latency.get("latency_p99_ms")) is not None]
    errors = {k: sum(s.errors_by_kind.get(f"errors_{k}") or 0 for s in steps) for k in ERROR_KINDS}
    worst = min((s.status.status for s in steps), key=_WORST.index)
    return Level(
        connections=connections,
        rps=statistics.median(rps) if rps else None,
        p99_ms=statistics.median(p99) if p99 else None,
        requests=sum(s.requests or 0 for s in steps),
        errors=errors,
        status=worst.value,
    )
