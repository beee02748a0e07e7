"""Concurrency sweeps: how throughput and p99 hold up as connections grow (the ``concurrency``
scenario's question), and the connection errors and timeouts at each level, as findings.

Read from ``results.csv`` rather than from the run's points: a level where more than 1 % of
requests failed is not a measurement (``status.judge``) and so is in no point, yet it is the
answer the sweep is for, so every closed-loop row counts here, its figures shown with its
status beside them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchlab.contract import test_label
from benchlab.measurement import ERROR_KINDS
from benchlab.results import read_rows
from benchlab.status import Status, StepStatus

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

    @property
    def label(self) -> str:
        return test_label(self.test) + (f", parameter {self.queries}" if self.queries is not None else "")

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


def _num(row: dict[str, str], key: str) -> float | None:
    try:
        return float(row[key]) if row.get(key) else None
    except ValueError:
        return None


def concurrency_sweeps(run_dir: Path) -> list[Sweep]:
    """Every closed-loop target x test x parameter run at MIN_LEVELS connection counts or more."""
    groups: dict[tuple[str, str, int | None], dict[int, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in read_rows(run_dir, warn=False):  # the report's load_run has warned of a torn row
        if (row.get("mode") or "closed") != "closed" or not row.get("concurrency"):
            continue
        queries = int(row["queries"]) if row.get("queries") else None
        groups[(row["target"], row["test"], queries)][int(row["concurrency"])].append(row)
    sweeps = []
    for (target, test, queries), by_level in groups.items():
        if len(by_level) < MIN_LEVELS:
            continue
        levels = tuple(_level(c, rows) for c, rows in sorted(by_level.items()))
        sweeps.append(Sweep(target, test, queries, levels))
    return sweeps


_WORST = (Status.ERROR, Status.FAIL, Status.INVALID, Status.SKIPPED, Status.WARN, Status.PASS)


def _level(connections: int, rows: list[dict[str, str]]) -> Level:
    rps = [v for r in rows if (v := _num(r, "rps")) is not None]
    p99 = [v for r in rows if (v := _num(r, "latency_p99_ms")) is not None]
    errors = {k: sum(int(_num(r, f"errors_{k}") or 0) for r in rows) for k in ERROR_KINDS}
    statuses = [StepStatus.parse(r.get("verification") or "").status for r in rows]
    worst = min(statuses, key=_WORST.index)
    return Level(
        connections=connections,
        rps=statistics.median(rps) if rps else None,
        p99_ms=statistics.median(p99) if p99 else None,
        requests=int(sum(_num(r, "requests") or 0 for r in rows)),
        errors=errors,
        status=worst.value,
    )
