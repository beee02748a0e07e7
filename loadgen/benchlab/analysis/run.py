"""A finished (or interrupted) run read back from disk, as typed steps grouped by load level.

Reports, comparisons and claims all read runs through here, so "what a step is", "which
steps count" and "which figures must carry a warning" are decided once.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlab import measurement
from benchlab.analysis.stats import Spread, pooled_spread
from benchlab.contract import TEST_TYPES, TESTS
from benchlab.cpus import cpuset_cpus, format_cpuset
from benchlab.errors import BenchlabError
from benchlab.model.codec import read_steps
from benchlab.model.level import AXIS_NAMES, Axes, Level
from benchlab.model.modes import MODE_ORDER, LoadMode
from benchlab.model.status import Status
from benchlab.model.step import Step
from benchlab.rundir import read_run_json
from benchlab.targets import registry_names

# Latency columns in percentile order, with the percentile each stands for.
PERCENTILES: tuple[tuple[str, float], ...] = tuple((f"latency_{key}_ms", pct) for key, pct in measurement.PERCENTILES)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Point:
    """The repeats of one target x test x mode x axes x level, summarised by medians."""

    target: str
    test: str
    mode: LoadMode | str
    axes: Axes
    level: Level
    steps: tuple[Step, ...]

    @property
    def rps_samples(self) -> list[float]:
        return [s.rps for s in self.steps if s.rps is not None]

    @property
    def rps(self) -> float:
        return statistics.median(self.rps_samples)

    def metric_samples(self, metric: str) -> list[float]:
        """Per-repeat values of ``rps`` or a latency column, skipping empty cells."""
        return [v for s in self.steps if (v := s.value(metric)) is not None]

    def median(self, metric: str) -> float | None:
        values = self.metric_samples(metric)
        return statistics.median(values) if values else None

    def resource(self, column: str) -> float | None:
        values = [v for s in self.steps if (v := s.resources.get(column)) is not None]
        return statistics.median(values) if values else None

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.steps)

    @property
    def flags(self) -> tuple[str, ...]:
        """Flags of any repeat, merged: one bad repeat taints the median it feeds."""
        out: list[str] = sorted({str(s.status) for s in self.steps if s.status.status is Status.WARN})
        if any(s.client_bound for s in self.steps):
            out.append("client-bound")
        if any(s.upstream_bound for s in self.steps):
            out.append("upstream-bound")
        if any(s.overloaded for s in self.steps):
            out.append("overloaded: offered rate not delivered")
        if self.errors:
            out.append(f"{self.errors} errors")
        dropped = sum(s.dropped or 0 for s in self.steps)
        if dropped:
            out.append(f"{dropped} dropped")
        return tuple(out)

    def label_in(self, run: Run) -> str:
        """The level, after the axes that vary in ``run`` (``w=2 c=64``)."""
        return " ".join(filter(None, (self.axes.label(run.varying_axes), self.level.label)))

    @property
    def label(self) -> str:
        return self.level.label


@dataclass(frozen=True)
class Run:
    """A run directory: its metadata, every step, and the successful steps grouped into points."""

    path: Path
    meta: Mapping[str, Any]
    steps: tuple[Step, ...]
    points: tuple[Point, ...]
    profiled: tuple[Step, ...] = ()  # py-spy attached (--profile): shown apart, never counted

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def targets(self) -> list[str]:
        """Targets with data, registry order first so colours and rows line up across runs."""
        seen = {s.target for s in self.steps}
        return [t for t in target_order() if t in seen] + sorted(seen - set(target_order()))

    @property
    def tests(self) -> list[str]:
        seen = {s.test for s in self.steps}
        return [t for t in TESTS if t in seen] + sorted(seen - set(TESTS))

    @functools.cached_property
    def varying_axes(self) -> tuple[str, ...]:
        """The axes this run swept (more than one value among its steps)."""
        return tuple(a for a in AXIS_NAMES if len({s.axes.value(a) for s in self.steps}) > 1)

    def axes_of(self, target: str, test: str | None = None) -> list[Axes]:
        """The axes a target's points were measured on, in sweep order."""
        seen = {p.axes for p in self.points if p.target == target and test in (None, p.test)}
        return sorted(seen, key=lambda a: a.sort_key)

    def reference_axes(self, target: str) -> Axes | None:
        """The setup comparisons between targets use when a run swept axes: the last of the sweep
        (most workers, newest Python): the lab's default setup gives every target all its CPUs."""
        seen = self.axes_of(target)
        return seen[-1] if seen else None

    def points_for(self, target: str, test: str, mode: str, axes: Axes | None = None) -> list[Point]:
        """The target's points at ``axes`` (default: its reference axes)."""
        at = axes or self.reference_axes(target)
        return [p for p in self.points if (p.target, p.test, p.mode, p.axes) == (target, test, mode, at)]

    def modes(self, test: str) -> list[str]:
        seen = {str(p.mode) for p in self.points if p.test == test}
        return [m for m in MODE_ORDER if m in seen] + sorted(seen - set(MODE_ORDER))

    def peak(self, target: str, test: str, mode: str, axes: Axes | None = None) -> Point | None:
        """The level with the highest median throughput, or None when nothing succeeded."""
        points = self.points_for(target, test, mode, axes)
        return max(points, key=lambda p: p.rps) if points else None

    def spread(self, target: str, metric: str, mode: str) -> Spread | None:
        """The target's repeat-to-repeat noise in ``metric``, pooled over all its ``mode`` points
        in the run: two repeats of one point alone give an interval too wide to read. Every
        ratio of one point against another (findings, claims) takes its interval from this."""
        points = [p for test in self.tests for p in self.points if (p.target, p.test, p.mode) == (target, test, mode)]
        return pooled_spread([p.metric_samples(metric) for p in points])

    def failed_steps(self) -> list[Step]:
        return [s for s in self.steps if not s.ok]


@functools.cache
def _registry_names() -> tuple[str, ...]:
    return tuple(registry_names())


def target_order() -> list[str]:
    """Registry order: every table and chart lists targets (and picks colours) in it."""
    return list(_registry_names())


def x_dimension(test: str, mode: str) -> str:
    """The level field a chart puts on its x axis for this test and mode."""
    if mode == LoadMode.OPEN:
        return "offered_rps"
    spec = TEST_TYPES.get(test)  # a run may hold a test this version no longer knows
    return "queries" if spec is not None and spec.param is not None else "concurrency"


def load_run(run_dir: Path) -> Run:
    """Reads and validates a run; a run with no successful step at all is a user error."""
    run_dir = Path(run_dir)
    every = read_steps(run_dir)
    steps = tuple(s for s in every if s.counted)  # a profiled step is no measurement
    try:
        meta = read_run_json(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchlabError(f"{run_dir}/run.json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BenchlabError(f"{run_dir}/run.json is not a JSON object")
    if not any(s.ok for s in steps):
        raise BenchlabError(
            f"{run_dir}: no successful steps ({len(steps)} recorded, none measured: see the verification column)"
        )
    profiled = tuple(s for s in every if not s.counted)
    return Run(path=run_dir, meta=meta, steps=steps, points=group_points(steps), profiled=profiled)


def group_points(steps: Iterable[Step]) -> tuple[Point, ...]:
    groups: dict[tuple[str, str, str, Axes, Level], list[Step]] = {}
    for step in steps:
        if step.ok:
            groups.setdefault((step.target, step.test, str(step.mode), step.axes, step.level), []).append(step)
    ordered = sorted(groups.items(), key=lambda kv: (*kv[0][:3], kv[0][3].sort_key, kv[0][4].sort_key))
    return tuple(
        Point(target=t, test=test, mode=LoadMode.parse(m), axes=a, level=lv,
              steps=tuple(sorted(v, key=lambda s: s.repeat)))
        for (t, test, m, a, lv), v in ordered
    )


def lookup(meta: Mapping[str, Any], *path: str) -> Any:
    """``meta[a][b]...`` or None when any key is missing or a level is not a mapping."""
    node: Any = meta
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def show(value: Any) -> str:
    """A run.json value as text; missing values read ``unknown``."""
    if value is None or value == "" or value == [] or value == {}:
        return UNKNOWN
    if isinstance(value, list | tuple):
        return cpuset_text(value)
    return str(value)


def cpu_list(value: Any) -> list[int] | None:
    """CPUs from a recorded cpuset, a list ``[0, 1]`` or a string ``"0-2,5"``; None if unreadable.

    Parsed leniently (no check against this machine): the run may come from another host.
    """
    if isinstance(value, str):
        try:
            return sorted(cpuset_cpus(value)) or None
        except ValueError:
            return None
    if isinstance(value, list | tuple):
        try:
            return sorted({int(c) for c in value}) or None
        except (TypeError, ValueError):
            return None
    return None


def cpuset_text(value: Any) -> str:
    """``[0, 1, 2, 5]`` or ``"0-2,5"`` -> ``0-2,5``: the form taskset and cgroups use."""
    nums = cpu_list(value)
    if nums is None:
        return show(value) if isinstance(value, str) and value else UNKNOWN
    return format_cpuset(nums)


def cpusets(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, cpuset) pairs from run.json ``cpus``, whether roles hold one set or one per target
    (one pair when every target has the same set: twelve identical sets say nothing more)."""
    cpus = meta.get("cpus")
    if not isinstance(cpus, Mapping):
        return [("cpus", UNKNOWN)]
    out = []
    for role, value in cpus.items():
        if isinstance(value, Mapping):
            texts = {name: cpuset_text(v) for name, v in value.items()}
            if len(set(texts.values())) == 1 and len(texts) > 1:
                out.append((f"{role.replace('_', ' ')} (every target)", next(iter(texts.values()))))
                continue
            where = "" if role == "targets" else f" ({role.replace('_', ' ')})"
            out += [(f"{name}{where}", text) for name, text in texts.items()]
        else:
            out.append((role, cpuset_text(value)))
    return out
