"""How throughput changes along each axis a run swept: per target and test, the peak at each
value of the axis, the other axes held at the target's reference setup (``Run.reference_axes``).

For an axis counting a resource (``workers``: N worker processes pinned to N CPUs) the scaling
efficiency says how much of the ideal it got: throughput at N / (N / N0 x throughput at N0),
N0 the smallest value swept (1 in a sweep from one worker, the usual definition). 1 is linear
scaling; 0.5 means half of each added CPU bought nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from benchlab.analysis.run import Point, Run
from benchlab.model.level import AXIS_TITLE, PER_UNIT
from benchlab.model.modes import LoadMode

MODE = LoadMode.CLOSED


@dataclass(frozen=True)
class AxisValue:
    value: Any
    peak: Point
    efficiency: float | None  # per-unit axes only; None for the first value or others


@dataclass(frozen=True)
class Scaling:
    """One target x test along one axis."""

    axis: str
    target: str
    test: str
    values: tuple[AxisValue, ...]

    @property
    def title(self) -> str:
        return AXIS_TITLE[self.axis]

    @property
    def per_unit(self) -> bool:
        return self.axis in PER_UNIT

    @property
    def speedup(self) -> float | None:
        """Throughput at the last value over the first."""
        first, last = self.values[0].peak.rps, self.values[-1].peak.rps
        return last / first if first else None


def scaling(run: Run) -> list[Scaling]:
    """Every swept axis x target x test with at least two values measured, in run order."""
    out = []
    for axis in run.varying_axes:
        for test in run.tests:
            for target in run.targets:
                found = along(run, axis, target, test)
                if len(found) >= 2:
                    out.append(Scaling(axis, target, test, tuple(_with_efficiency(axis, found))))
    return out


def along(run: Run, axis: str, target: str, test: str, mode: str = MODE) -> list[tuple[Any, Point]]:
    """(value, peak there) for each value of ``axis``, the target's other axes at their reference."""
    ref = run.reference_axes(target)
    if ref is None:
        return []
    out = []
    for axes in run.axes_of(target, test):
        if replace(axes, **{axis: ref.value(axis)}) != replace(ref, cpus=axes.cpus):
            continue  # another axis differs from the reference: not this line
        peak = run.peak(target, test, mode, axes)
        if peak is not None:
            out.append((axes.value(axis), peak))
    return out


def _with_efficiency(axis: str, found: list[tuple[Any, Point]]) -> list[AxisValue]:
    if axis not in PER_UNIT:
        return [AxisValue(v, p, None) for v, p in found]
    (n0, base), out = found[0], []
    for n, p in found:
        ideal = base.rps * n / n0 if n0 else 0
        out.append(AxisValue(n, p, p.rps / ideal if ideal and n != n0 else None))
    return out
