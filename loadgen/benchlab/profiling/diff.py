"""``benchlab profile RUN_DIR --target A --vs B --test T``: where A's CPU per request differs
from B's, by component, then by function (the 15 that changed most), as rich tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchlab.errors import BenchlabError
from benchlab.profiling.breakdown import Breakdown, breakdown, cpu_by_component, read_profile
from benchlab.profiling.components import COMPONENT_NAMES, attribute
from benchlab.profiling.speedscope import read_speedscope
from benchlab.profiling.step import profile_paths

TOP_FUNCTIONS = 15


def _us(value: float) -> str:
    return f"{value:,.1f}"


def _delta(value: float) -> str:
    return f"{value:+,.1f}"


def function_cpu(b: Breakdown, cpu_us: float) -> dict[str, float]:
    """Innermost function -> CPU µs per request, the target's total split by its self samples."""
    return {f: cpu_us * n / b.busy for f, n in b.functions.items()} if b.busy else {}


def profile_diff(run_dir: Path, target: str, vs: str, test: str, console: Console | None = None) -> None:
    console = console or Console()
    by = cpu_by_component(read_profile(run_dir))
    for name in (target, vs):
        if (name, test) not in by:
            known = sorted({f"{t} {x}" for t, x in by})
            raise BenchlabError(f"{run_dir}/profile.csv has no {test} profile of {name}; it has: {', '.join(known)}")
    a, b = by[(target, test)], by[(vs, test)]
    table = Table(title=f"{test}: CPU µs per request, {target} vs {vs}")
    for col in ("component", vs, target, "change"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for comp in sorted(COMPONENT_NAMES, key=lambda c: -abs(a.get(c, 0.0) - b.get(c, 0.0))):
        va, vb = a.get(comp, 0.0), b.get(comp, 0.0)
        if va or vb:
            table.add_row(comp, _us(vb), _us(va), _delta(va - vb))
    table.add_row("total", _us(sum(b.values())), _us(sum(a.values())), _delta(sum(a.values()) - sum(b.values())),
                  style="bold")  # fmt: skip
    console.print(table)
    fa, fb = (_functions(run_dir, n, test, sum(c.values())) for n, c in ((target, a), (vs, b)))
    top = sorted(set(fa) | set(fb), key=lambda f: -abs(fa.get(f, (0.0, ""))[0] - fb.get(f, (0.0, ""))[0]))
    table = Table(title=f"top {TOP_FUNCTIONS} functions by change (self CPU µs per request)")
    for col in ("function", "component", vs, target, "change"):
        table.add_column(col, justify="right" if col in (vs, target, "change") else "left")
    for f in top[:TOP_FUNCTIONS]:
        va, ca = fa.get(f, (0.0, ""))
        vb, cb = fb.get(f, (0.0, ""))
        table.add_row(f, ca or cb, _us(vb), _us(va), _delta(va - vb))
    console.print(table)


def _functions(run_dir: Path, target: str, test: str, cpu_us: float) -> dict[str, tuple[float, str]]:
    """Each innermost function's CPU µs per request and the component its samples went to."""
    speedscope, _ = profile_paths(Path(run_dir), target, test)
    if not speedscope.is_file():
        raise BenchlabError(f"{speedscope} is missing: the functions come from it")
    recording = read_speedscope(speedscope)
    b = breakdown(recording)
    where: dict[str, str] = {}
    for stack, _ in recording.samples():
        labels = [f.label for f in stack if f.file]
        if labels:
            where.setdefault(labels[-1], attribute(stack))
    return {f: (us, where.get(f, "")) for f, us in function_cpu(b, cpu_us).items()}
