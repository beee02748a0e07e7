"""Where a step sits: its load ``Level`` and the lab ``Axes`` it ran on, both as named fields.

A level is how hard the load pushed (connections, pipelining, queries, offered rate); the axes
are what the lab held still before a scenario could sweep them (worker processes and the CPUs
they were pinned to, the interpreter). Every field is a ``results.csv`` column of the same name.
A new axis is one field of ``Axes`` (with ``axis()`` metadata), the scenario's sweep list of the
same name, and how the lab applies a value (``harness``: the target's environment or affinity, and
the target reporting it in ``/benchlab/info``). The CSV codec, grouping, labels, ``compare``, the
axis charts, scaling and the decomposition's step for it read the fields from here; a measure
peculiar to the axis (efficiency for workers) is one analysis step more.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

LEVEL_DIMENSIONS = ("concurrency", "pipeline", "queries", "offered_rps")


@dataclass(frozen=True)
class Level:
    """The load a step was measured at; None where the step's test or mode has no such knob."""

    concurrency: int | None = None
    pipeline: int | None = None
    queries: int | None = None
    offered_rps: float | None = None

    def value(self, dimension: str) -> float | None:
        """One of ``LEVEL_DIMENSIONS`` by name (a chart's x axis is chosen by name)."""
        if dimension not in LEVEL_DIMENSIONS:
            raise KeyError(dimension)
        return getattr(self, dimension)

    def without_rate(self) -> Level:
        """The level with no offered rate: open-loop steps of one sweep share it."""
        return Level(self.concurrency, self.pipeline, self.queries, None)

    def with_rate(self, offered_rps: float | None) -> Level:
        return Level(self.concurrency, self.pipeline, self.queries, offered_rps)

    @property
    def label(self) -> str:
        """``c=512 q=20``, ``c=256 p=16``, ``1000 rps offered``: how a level reads in tables."""
        parts = []
        if self.offered_rps is not None:
            parts.append(f"{self.offered_rps:g} rps offered")
        if self.concurrency is not None:
            parts.append(f"c={self.concurrency}")
        if self.pipeline is not None and self.pipeline > 1:
            parts.append(f"p={self.pipeline}")
        if self.queries is not None:
            parts.append(f"q={self.queries}")
        return " ".join(parts) or "-"

    @property
    def sort_key(self) -> tuple[float, ...]:
        return tuple(-1 if v is None else v for v in (self.concurrency, self.pipeline, self.queries, self.offered_rps))


def axis(short: str, title: str, per_unit: bool = False) -> dict[str, Any]:
    """Marks an ``Axes`` field as a dimension a scenario can sweep (``short`` labels points:
    ``w=2``; ``title`` names it in the report). ``per_unit``: its value counts a resource that
    ideal scaling multiplies throughput by (workers), so the report gives scaling efficiency."""
    return {"axis": (short, title, per_unit)}


@dataclass(frozen=True)
class Axes:
    """The lab setup a step ran on, as the target reported it. ``cpus`` and ``python_build`` are
    recorded, not swept: they follow ``workers`` and ``python``."""

    workers: int | None = field(default=None, metadata=axis("w", "workers", per_unit=True))
    cpus: str | None = None  # the targets' cpuset its workers were pinned to ("0-1")
    python: str | None = field(default=None, metadata=axis("py", "python"))  # exact: "3.13.1"
    python_build: str | None = None  # "default" or "free-threading"

    def value(self, name: str) -> Any:
        return getattr(self, name)

    @property
    def swept(self) -> dict[str, Any]:
        """The sweepable axes this setup sets (a planned step's: the rest is each target's default)."""
        return {n: v for n in AXIS_NAMES if (v := getattr(self, n)) is not None}

    def label(self, names: tuple[str, ...]) -> str:
        """``w=2 py=3.13.1`` for the named axes (those that vary in a run)."""
        return " ".join(f"{AXIS_SHORT[n]}={v}" for n in names if (v := getattr(self, n)) is not None)

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return tuple(_sortable(getattr(self, n)) for n in AXIS_NAMES)


def _sortable(value: Any) -> tuple[Any, ...]:
    """None first, numbers by value, versions (``3.9.1`` < ``3.13.0``) part by part."""
    if value is None:
        return (0,)
    if isinstance(value, int | float):
        return (1, value)
    return (2, *(int(p) if p.isdigit() else -1 for p in str(value).split(".")), str(value))


AXIS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Axes))  # every Axes column
AXIS_TYPES: dict[str, type] = {f.name: int if "int" in str(f.type) else str for f in fields(Axes)}
AXIS_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Axes) if "axis" in f.metadata)  # the sweepable ones
AXIS_SHORT: dict[str, str] = {f.name: f.metadata["axis"][0] for f in fields(Axes) if "axis" in f.metadata}
AXIS_TITLE: dict[str, str] = {f.name: f.metadata["axis"][1] for f in fields(Axes) if "axis" in f.metadata}
PER_UNIT: frozenset[str] = frozenset(f.name for f in fields(Axes) if "axis" in f.metadata and f.metadata["axis"][2])
