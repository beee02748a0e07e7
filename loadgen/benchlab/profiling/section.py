"""The report's profile section (a ``--profile`` run): per test, a stacked bar per target of CPU µs
per request by component; each decomposition step with the components whose CPU per request
changed most; the flame graphs; the profiled steps with the profiler's overhead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlab.analysis.analyse import Analysis
from benchlab.analysis.findings import Factor
from benchlab.contract import test_label
from benchlab.profiling.breakdown import PROFILE_CSV, cpu_by_component, read_profile
from benchlab.profiling.components import COMPONENT_NAMES, OTHER
from benchlab.profiling.flamegraph import COLOURS
from benchlab.profiling.step import profile_paths
from benchlab.report.plotting import Chart, Drawn, context_line, figure, save

TOP_CHANGES = 3


@dataclass(frozen=True)
class ProfileSection:
    charts: list[Chart]
    steps: list[str]  # "style, db: +210 µs/request: ORM +150, validation +35, telemetry +20"
    flames: list[tuple[str, str, str]]  # target, test, relative path of the SVG
    profiled: list[dict[str, Any]]  # the profiled rows: level, throughput, overhead, status
    worst_other: tuple[str, str, float] | None  # target, test, share of non-idle samples in `other`


def step_annotation(f: Factor, cpu: dict[tuple[str, str], dict[str, float]]) -> str | None:
    """``kind, test: +N µs/request: A +x, B +y, C +z``, the components that changed most first."""
    a, b = cpu.get((f.base, f.test)), cpu.get((f.other, f.test))
    if a is None or b is None:
        return None
    change = {c: b.get(c, 0.0) - a.get(c, 0.0) for c in COMPONENT_NAMES}
    top = sorted((c for c in change if round(change[c])), key=lambda c: -abs(change[c]))[:TOP_CHANGES]
    parts = ", ".join(f"{c} {change[c]:+,.0f}" for c in top)
    head = f"{f.kind}, {f.test}: {sum(change.values()):+,.0f} µs/request"
    return f"{head} ({f.base} → {f.other})" + (f": {parts}" if parts else "")


def _chart(test: str, cpu: dict[tuple[str, str], dict[str, float]], targets: list[str]) -> Drawn | None:
    rows = [t for t in targets if (t, test) in cpu]
    if not rows:
        return None
    fig, (ax,) = figure(height=1.8 + 0.45 * len(rows))
    used = [c for c in COMPONENT_NAMES if any(cpu[(t, test)].get(c) for t in rows)]
    for i, target in enumerate(reversed(rows)):
        left = 0.0
        for c in used:
            v = cpu[(target, test)].get(c, 0.0)
            ax.barh(i, v, left=left, color=COLOURS[c], height=0.6, label=c if i == 0 else None)
            left += v
        ax.text(left * 1.01, i, f"{left:,.0f} µs", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), list(reversed(rows)))
    ax.set_xlabel("server CPU µs per request (profiled step at the test's peak level), split by component")
    ax.grid(axis="y", visible=False)
    fig.legend(fontsize=7, loc="outside right upper")
    title = f"{test_label(test)}: CPU per request by component"
    ax.set_title(title, wrap=True)  # a long test name and a narrow axes: wrapped within the figure
    return Drawn(f"profile-{test}", title, fig, False)


def profile_section(analysis: Analysis, charts_dir: Path) -> ProfileSection | None:
    """None for a run without ``profile.csv``."""
    run = analysis.run
    if not (run.path / PROFILE_CSV).is_file():
        return None
    rows = read_profile(run.path)
    cpu = cpu_by_component(rows)
    footer = context_line(run.meta)
    charts = [save(d, footer, charts_dir) for test in run.tests if (d := _chart(test, cpu, run.targets))]
    steps = [s for f in analysis.factors if (s := step_annotation(f, cpu))]
    flames = []
    for target, test in cpu:
        svg = profile_paths(run.path, target, test)[1]
        if svg.is_file():
            flames.append((target, test, str(svg.relative_to(run.path))))
    profiled = [
        {"target": s.target, "test": s.test, "level": s.level.label, "rps": s.rps,
         "overhead": s.profiler_overhead, "verification": s.verification}
        for s in run.profiled
    ]  # fmt: skip
    other = [(r["target"], r["test"], float(r["share"])) for r in rows if r["component"] == OTHER and r["share"]]
    worst = max(other, key=lambda o: o[2]) if other else None
    return ProfileSection(charts, steps, flames, profiled, worst)
