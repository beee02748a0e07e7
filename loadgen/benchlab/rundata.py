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
from benchlab.contract import TEST_TYPES, TESTS
from benchlab.cpus import cpuset_cpus, format_cpuset
from benchlab.errors import BenchlabError
from benchlab.measurement import ERROR_COLUMNS, LATENCY_COLUMNS
from benchlab.results import COUNTED_MODES, CSV_NAME, read_rows, read_run_json
from benchlab.stats import Spread, pooled_spread
from benchlab.status import Status, StepStatus
from benchlab.targets import registry_names

# Latency columns in percentile order, with the percentile each stands for.
PERCENTILES: tuple[tuple[str, float], ...] = tuple((f"latency_{key}_ms", pct) for key, pct in measurement.PERCENTILES)
RESOURCE_COLUMNS: tuple[str, ...] = (
    "server_cpu_cores", "server_pss_mb", "server_rss_mb", "db_cpu_cores", "loadgen_cpu_cores", "upstream_cpu_cores",
)  # fmt: skip
UNKNOWN = "unknown"

# (concurrency, pipeline, queries, offered_rps): the load a step was measured at.
Level = tuple[int | None, int | None, int | None, float | None]


def level_label(level: Level) -> str:
    """``c=512 q=20``, ``c=256 p=16``, ``1000 rps offered``: how a level reads in tables."""
    concurrency, pipeline, queries, offered = level
    parts = []
    if offered is not None:
        parts.append(f"{offered:g} rps offered")
    if concurrency is not None:
        parts.append(f"c={concurrency}")
    if pipeline is not None and pipeline > 1:
        parts.append(f"p={pipeline}")
    if queries is not None:
        parts.append(f"q={queries}")
    return " ".join(parts) or "-"


@dataclass(frozen=True)
class RecordedStep:
    """One CSV row: one measured (or failed) step of one repeat."""

    target: str
    test: str
    mode: str
    level: Level
    repeat: int
    rps: float | None
    latency: Mapping[str, float | None]
    errors: int
    dropped: int
    resources: Mapping[str, float | None]
    client_bound: bool
    overloaded: bool
    status: StepStatus
    profiler_overhead: float | None = None  # a profiled step's throughput lost to py-spy (a fraction)
    upstream_bound: bool = False  # the upstream service, not the server, may have been the limit

    @property
    def ok(self) -> bool:
        """A measurement: passed or warned verification, and served the test (``status.judge``)."""
        return self.status.measured and self.rps is not None

    @property
    def verification(self) -> str:
        return str(self.status)

    def value(self, metric: str) -> float | None:
        """``rps`` or one latency column."""
        return self.rps if metric == "rps" else self.latency.get(metric)

    @property
    def flags(self) -> tuple[str, ...]:
        """Why a figure from this step must not be quoted unmarked."""
        out = []
        if self.status.status is Status.WARN:
            out.append(str(self.status))
        if self.client_bound:
            out.append("client-bound")
        if self.upstream_bound:
            out.append("upstream-bound")
        if self.overloaded:
            out.append("overloaded: offered rate not delivered")
        if self.errors:
            out.append(f"{self.errors} errors")
        if self.dropped:
            out.append(f"{self.dropped} dropped")
        return tuple(out)


@dataclass(frozen=True)
class Point:
    """The repeats of one target x test x mode x level, summarised by medians."""

    target: str
    test: str
    mode: str
    level: Level
    steps: tuple[RecordedStep, ...]

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
        dropped = sum(s.dropped for s in self.steps)
        if dropped:
            out.append(f"{dropped} dropped")
        return tuple(out)

    @property
    def label(self) -> str:
        return level_label(self.level)


@dataclass(frozen=True)
class Run:
    """A run directory: its metadata, every step, and the successful steps grouped into points."""

    path: Path
    meta: Mapping[str, Any]
    steps: tuple[RecordedStep, ...]
    points: tuple[Point, ...]
    profiled: tuple[RecordedStep, ...] = ()  # py-spy attached (--profile): shown apart, never counted

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

    def points_for(self, target: str, test: str, mode: str) -> list[Point]:
        return [p for p in self.points if (p.target, p.test, p.mode) == (target, test, mode)]

    def modes(self, test: str) -> list[str]:
        seen = {p.mode for p in self.points if p.test == test}
        return [m for m in ("closed", "open") if m in seen] + sorted(seen - {"closed", "open"})

    def peak(self, target: str, test: str, mode: str) -> Point | None:
        """The level with the highest median throughput, or None when nothing succeeded."""
        points = self.points_for(target, test, mode)
        return max(points, key=lambda p: p.rps) if points else None

    def spread(self, target: str, metric: str, mode: str) -> Spread | None:
        """The target's repeat-to-repeat noise in ``metric``, pooled over all its ``mode`` points
        in the run: two repeats of one point alone give an interval too wide to read. Every
        ratio of one point against another (findings, claims) takes its interval from this."""
        points = [p for test in self.tests for p in self.points_for(target, test, mode)]
        return pooled_spread([p.metric_samples(metric) for p in points])

    def failed_steps(self) -> list[RecordedStep]:
        return [s for s in self.steps if not s.ok]


@functools.cache
def _registry_names() -> tuple[str, ...]:
    return tuple(registry_names())


def target_order() -> list[str]:
    """Registry order: every table and chart lists targets (and picks colours) in it."""
    return list(_registry_names())


def x_dimension(test: str, mode: str) -> str:
    """The level column a chart puts on its x axis for this test and mode."""
    if mode == "open":
        return "offered_rps"
    spec = TEST_TYPES.get(test)  # a run may hold a test this version no longer knows
    return "queries" if spec is not None and spec.param is not None else "concurrency"


def level_value(level: Level, dimension: str) -> float | None:
    concurrency, pipeline, queries, offered = level
    return {"concurrency": concurrency, "pipeline": pipeline, "queries": queries, "offered_rps": offered}[dimension]


def load_run(run_dir: Path) -> Run:
    """Reads and validates a run; a run with no successful step at all is a user error."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    try:
        meta = read_run_json(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchlabError(f"{run_dir}/run.json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BenchlabError(f"{run_dir}/run.json is not a JSON object")
    every = [_step(row, n) for n, row in enumerate(rows, start=2)]
    steps = tuple(s for s in every if s.mode in COUNTED_MODES)  # a profiled step is no measurement
    profiled = tuple(s for s in every if s.mode not in COUNTED_MODES)
    if not any(s.ok for s in steps):
        raise BenchlabError(
            f"{run_dir}: no successful steps ({len(steps)} recorded, none measured: see the verification column)"
        )
    return Run(path=run_dir, meta=meta, steps=steps, points=group_points(steps), profiled=profiled)


def group_points(steps: Iterable[RecordedStep]) -> tuple[Point, ...]:
    groups: dict[tuple[str, str, str, Level], list[RecordedStep]] = {}
    for step in steps:
        if step.ok:
            groups.setdefault((step.target, step.test, step.mode, step.level), []).append(step)
    return tuple(
        Point(target=k[0], test=k[1], mode=k[2], level=k[3], steps=tuple(sorted(v, key=lambda s: s.repeat)))
        for k, v in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    )


def _sort_key(key: tuple[str, str, str, Level]) -> tuple[Any, ...]:
    return (key[0], key[1], key[2], *((-1 if v is None else v) for v in key[3]))


def _step(row: Mapping[str, str], line: int) -> RecordedStep:
    def num(column: str) -> float | None:
        raw = (row.get(column) or "").strip()
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            raise BenchlabError(f"{CSV_NAME} line {line}: {column} {raw!r} is not a number") from None

    def whole(column: str) -> int | None:
        value = num(column)
        return None if value is None else int(value)

    level: Level = (whole("concurrency"), whole("pipeline"), whole("queries"), num("offered_rps"))
    return RecordedStep(
        target=row["target"],
        test=row["test"],
        mode=row["mode"] or "closed",
        level=level,
        repeat=whole("repeat") or 1,
        rps=num("rps"),
        latency={c: num(c) for c in LATENCY_COLUMNS},
        errors=sum(whole(c) or 0 for c in ERROR_COLUMNS),
        dropped=whole("dropped") or 0,
        resources={c: num(c) for c in RESOURCE_COLUMNS},
        client_bound=(row.get("client_bound") or "").strip().lower() == "true",
        overloaded=(row.get("overloaded") or "").strip().lower() == "true",
        upstream_bound=(row.get("upstream_bound") or "").strip().lower() == "true",
        status=StepStatus.parse(row.get("verification") or ""),
        profiler_overhead=num("profiler_overhead"),
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
    """(role, cpuset) pairs from run.json ``cpus``, whether roles hold one set or one per target."""
    cpus = meta.get("cpus")
    if not isinstance(cpus, Mapping):
        return [("cpus", UNKNOWN)]
    out = []
    for role, value in cpus.items():
        if isinstance(value, Mapping):
            where = "" if role == "targets" else f" ({role.replace('_', ' ')})"
            out += [(f"{name}{where}", cpuset_text(v)) for name, v in value.items()]
        else:
            out.append((role, cpuset_text(value)))
    return out
