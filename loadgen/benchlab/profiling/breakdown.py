"""From a recording to ``profile.csv``: samples per component, their share of the non-idle
samples, and CPU µs per request = the target's measured CPU seconds in the profiled step × share
÷ requests completed, so that the components of a target × test add up to its CPU per request.

py-spy keeps only the samples of threads that were running (``--idle`` off: it asks the kernel
whether each thread is running, waiting in a selector or any other system call is not) and writes
nothing for the others. The idle samples are the rest of the ticks of each thread seen:
``ticks × threads - kept``; they are reported apart (the ``(idle)`` row) and never in a share.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchlab.errors import BenchlabError
from benchlab.profiling.components import COMPONENT_NAMES, attribute, component_of_module, module_of
from benchlab.profiling.speedscope import Recording

PROFILE_CSV = "profile.csv"
PROFILE_COLUMNS = ("target", "test", "component", "samples", "share", "cpu_us_per_request")
IDLE = "(idle)"  # the row of idle samples: counted, left out of every share


@dataclass
class Breakdown:
    """One target × test's profile, summed."""

    components: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)  # innermost frame label -> samples
    frame_component: dict[str, str] = field(default_factory=dict)  # frame label -> its module's component
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)  # for the flame graph
    idle: int = 0

    @property
    def busy(self) -> int:
        return sum(self.components.values())

    def share(self, component: str) -> float:
        return self.components[component] / self.busy if self.busy else 0.0


def breakdown(recording: Recording, ticks: int | None = None) -> Breakdown:
    """Attributes every sample; ``ticks`` (rate × seconds sampled) gives the idle count."""
    out = Breakdown()
    for stack, n in recording.samples():
        component = attribute(stack)
        out.components[component] += n
        labels = tuple(f.label for f in stack if f.file)
        if labels:
            out.functions[labels[-1]] += n
        for f in stack:
            if f.label not in out.frame_component and (module := module_of(f.file)) is not None:
                out.frame_component[f.label] = component_of_module(module)
        out.stacks[tuple(f.label if f.file else f.name for f in stack)] += n
    if ticks is not None:
        out.idle = max(0, ticks * len(recording.threads) - recording.total)
    return out


def cpu_us_per_request(cpu_seconds: float | None, requests: int | None, share: float) -> float | None:
    """The component's CPU µs per request; None when CPU or requests were not measured."""
    if cpu_seconds is None or not requests:
        return None
    return cpu_seconds * 1e6 * share / requests


def rows(target: str, test: str, b: Breakdown, cpu_seconds: float | None, requests: int | None) -> list[dict]:
    """The ``profile.csv`` rows of one target × test: every component, then the idle samples."""
    out = []
    for component in COMPONENT_NAMES:
        share = b.share(component)
        out.append({
            "target": target, "test": test, "component": component, "samples": b.components[component],
            "share": round(share, 4), "cpu_us_per_request": _round(cpu_us_per_request(cpu_seconds, requests, share)),
        })  # fmt: skip
    out.append({"target": target, "test": test, "component": IDLE, "samples": b.idle, "share": None,
                "cpu_us_per_request": None})  # fmt: skip
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def append_rows(run_dir: Path, new: Iterable[Mapping]) -> None:
    """Appends to ``profile.csv`` (header first when new); rows of the same target × test that a
    resumed run profiles again replace the old ones."""
    new = list(new)
    path = run_dir / PROFILE_CSV
    keys = {(r["target"], r["test"]) for r in new}
    kept = [r for r in read_profile(run_dir) if (r["target"], r["test"]) not in keys] if path.exists() else []
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=PROFILE_COLUMNS)
        writer.writeheader()
        for r in [*kept, *new]:
            writer.writerow({k: "" if r[k] is None else r[k] for k in PROFILE_COLUMNS})
    tmp.replace(path)


def read_profile(run_dir: Path) -> list[dict[str, str]]:
    path = Path(run_dir) / PROFILE_CSV
    if not path.is_file():
        raise BenchlabError(f"{run_dir} has no {PROFILE_CSV}: run it with --profile")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != PROFILE_COLUMNS:
            raise BenchlabError(f"{path}: expected columns {', '.join(PROFILE_COLUMNS)}")
        return list(reader)


def cpu_by_component(profile_rows: Iterable[Mapping[str, str]]) -> dict[tuple[str, str], dict[str, float]]:
    """(target, test) -> component -> CPU µs per request, from ``profile.csv`` rows."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in profile_rows:
        if r["component"] != IDLE and r["cpu_us_per_request"] not in ("", None):
            out.setdefault((r["target"], r["test"]), {})[r["component"]] = float(r["cpu_us_per_request"])
    return out
