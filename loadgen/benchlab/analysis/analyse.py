"""A run's analysis, computed once: every figure the report's sections, its charts and
``summary.csv`` show comes from one ``Analysis`` (``analyse``), none is worked out again where
it is drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchlab.analysis.capacity import Sustainable, p99_bound_ms, sustainable_rate
from benchlab.analysis.claims import PairingResult, evaluate_claims, unmeasured
from benchlab.analysis.findings import Factor, Lead, decomposition, leads
from benchlab.analysis.run import Point, Run
from benchlab.analysis.scaling import Scaling, scaling
from benchlab.analysis.sweep import Sweep, concurrency_sweeps
from benchlab.config.claims import Claim
from benchlab.model.level import AXIS_NAMES
from benchlab.model.modes import LoadMode

SUMMARY_COLUMNS: tuple[str, ...] = (
    "target", "test", "mode", "peak_level", "concurrency", "pipeline", "queries", "offered_rps",
    "repeats", "peak_rps", "rps_min", "rps_max", "p99_ms", "server_cpu_cores", "rps_per_core",
    "server_pss_mb", "server_rss_mb", "loadgen_cpu_cores", "errors_at_peak", "errors_total", "failed_steps",
    "sustainable_rps", "sustainable_limit", "flags", *AXIS_NAMES,
)  # fmt: skip


@dataclass(frozen=True)
class Analysis:
    run: Run
    summary: list[dict[str, Any]]  # summary.csv's rows
    leads: list[Lead]
    factors: list[Factor]  # the decomposition, axes' steps last
    sustainable: dict[str, list[Sustainable]]  # by test
    scaling: list[Scaling]
    p99_bound_ms: float
    claims: list[PairingResult]
    claims_unmeasured: list[tuple[Claim, list[str]]]
    sweeps: list[Sweep]  # concurrency sweeps: every level, measured or not

    @property
    def sweep_findings(self) -> list[str]:
        return [f for s in self.sweeps for f in s.findings()]

    def scaling_for(self, test: str) -> list[Scaling]:
        return [s for s in self.scaling if s.test == test]


def analyse(run: Run, claims: Sequence[Claim] = ()) -> Analysis:
    sustainable = {(t, test): s for test in run.tests for t in run.targets
                   if (s := sustainable_rate(run, t, test)) is not None}  # fmt: skip
    return Analysis(
        run=run,
        summary=summary_rows(run, sustainable),
        leads=leads(run),
        factors=decomposition(run),
        sustainable={test: [s for (_, t), s in sustainable.items() if t == test] for test in run.tests},
        scaling=scaling(run),
        p99_bound_ms=p99_bound_ms(run),
        claims=evaluate_claims(run, claims),
        claims_unmeasured=unmeasured(run, claims),
        sweeps=concurrency_sweeps(run),
    )


def summary_rows(run: Run, sustainable: Mapping[tuple[str, str], Sustainable]) -> list[dict[str, Any]]:
    """Per target x test x mode: the peak level and what it cost; failed combinations too."""
    rows = []
    for test in run.tests:
        for target in run.targets:
            steps = [s for s in run.steps if s.target == target and s.test == test]
            if not steps:
                continue
            modes = sorted({s.mode for s in steps}, key=lambda m: (m != LoadMode.CLOSED, m))
            for mode in modes:
                mine = [s for s in steps if s.mode == mode]
                peak = run.peak(target, test, mode)
                row: dict[str, Any] = {c: "" for c in SUMMARY_COLUMNS}
                row.update(
                    target=target,
                    test=test,
                    mode=mode,
                    errors_total=sum(s.errors for s in mine),
                    failed_steps=sum(not s.ok for s in mine),
                )
                if mode == LoadMode.OPEN and (rate := sustainable.get((target, test))) is not None:
                    row.update(sustainable_rps=_round(rate.rps, 1), sustainable_limit=rate.limited_by)
                if peak is not None:
                    row.update(_peak_fields(peak))
                    row.update({a: peak.axes.value(a) for a in AXIS_NAMES})
                else:
                    row["flags"] = "no successful step: " + "; ".join(sorted({s.verification for s in mine}))
                rows.append(row)
    return rows


def _peak_fields(peak: Point) -> dict[str, Any]:
    cpu = peak.resource("server_cpu_cores")
    return {
        "peak_level": peak.label,
        "concurrency": peak.level.concurrency,
        "pipeline": peak.level.pipeline,
        "queries": peak.level.queries,
        "offered_rps": peak.level.offered_rps,
        "repeats": len(peak.rps_samples),
        "peak_rps": round(peak.rps, 1),
        "rps_min": round(min(peak.rps_samples), 1),
        "rps_max": round(max(peak.rps_samples), 1),
        "p99_ms": _round(peak.median("latency_p99_ms"), 3),
        "server_cpu_cores": _round(cpu, 3),
        "rps_per_core": round(peak.rps / cpu, 1) if cpu else None,
        "server_pss_mb": _round(peak.resource("server_pss_mb"), 1),
        "server_rss_mb": _round(peak.resource("server_rss_mb"), 1),
        "loadgen_cpu_cores": _round(peak.resource("loadgen_cpu_cores"), 3),
        "errors_at_peak": peak.errors,
        "flags": "; ".join(peak.flags),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
