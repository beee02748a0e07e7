"""The report's charts per test (peak, scaling, latency spectrum, open loop) and of resources.

Every chart names its axis units; figures from client-bound steps or steps with errors are
drawn with a red ring or hatch and a warning sign in the legend (the look: plotting.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from benchlab.analysis.analyse import Analysis
from benchlab.analysis.capacity import p99_bound_ms
from benchlab.analysis.findings import Factor
from benchlab.analysis.run import (
    PERCENTILES,
    Point,
    Run,
    cpu_list,
    lookup,
    x_dimension,
)  # fmt: skip
from benchlab.contract import TEST_TYPES, test_label
from benchlab.model.modes import LoadMode
from benchlab.report.axes import axis_chart
from benchlab.report.plotting import (
    FLAG_COLOUR,
    MARKERS,
    PALETTE,
    RC,
    WARN,
    Chart,
    Drawn,
    colour,
    context_line,
    figure,
    flag_legend,
    flag_note,
    legend,
    marker,
    ring,
    save,
    set_title,
)

RATIO_TICKS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)
AXIS_LABELS = {
    "concurrency": "concurrent connections",
    "queries": "queries per request",
    "offered_rps": "offered rate (requests/s)",
}
WAIT_LABEL = "upstream wait (ms)"  # the parameter of a test that waits, in place of "queries per request"


def render_charts(analysis: Analysis, out_dir: Path) -> dict[str, list[Chart]]:
    """All charts of a run, keyed by report section (a test name, or ``resources``); PNGs go to out_dir."""
    run = analysis.run
    footer = context_line(run.meta)
    with matplotlib.rc_context(RC):
        return {section: [save(c, footer, out_dir) for c in drawn] for section, drawn in draw_charts(analysis).items()}


def draw_charts(analysis: Analysis) -> dict[str, list[Drawn]]:
    """render_charts' figures, drawn but not yet saved (nor given their footer)."""
    run = analysis.run
    sections: dict[str, list[Drawn]] = {}
    with matplotlib.rc_context(RC):
        for test in run.tests:
            along = [axis_chart(analysis.scaling_for(test), axis) for axis in run.varying_axes]
            drawn = (_peak(run, test), *along, _scaling(run, test), _spectrum(run, test), _open_loop(run, test))
            sections[test] = [c for c in drawn if c is not None]
        resources = _resources(run)
        if resources is not None:
            sections["resources"] = [resources]
        factors = _decomposition(analysis.factors, run.tests)
        if factors is not None:
            sections["decomposition"] = [factors]
    return sections


def _primary_mode(run: Run, test: str) -> str | None:
    modes = run.modes(test)
    return LoadMode.CLOSED if LoadMode.CLOSED in modes else (modes[0] if modes else None)


def _peak(run: Run, test: str) -> Drawn | None:
    mode = _primary_mode(run, test)
    if mode is None:
        return None
    peaks = [(t, p) for t in run.targets if (p := run.peak(t, test, mode)) is not None]
    if not peaks:
        return None
    fig, (ax,) = figure(height=1.6 + 0.55 * len(peaks))
    flagged = False
    names = [t for t, _ in peaks][::-1]
    for i, (target, point) in enumerate(reversed(peaks)):
        samples = point.rps_samples
        bad = bool(point.flags)
        flagged |= bad
        ax.barh(
            i, point.rps, color=colour(target), height=0.6,
            xerr=[[point.rps - min(samples)], [max(samples) - point.rps]], capsize=4,
            hatch="xx" if bad else None, edgecolor=FLAG_COLOUR if bad else colour(target),
            linewidth=1.5 if bad else 0,
        )  # fmt: skip
        note = f"{point.rps:,.0f} rps at {point.label}, n={len(samples)}"
        if bad:
            note += f"\n{flag_note(point.flags)}"
        ax.text(max(samples) * 1.02, i, note, va="center", fontsize=8, color=FLAG_COLOUR if bad else "black")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("throughput at peak (requests/s); bar = median of repeats, whisker = min..max")
    ax.set_xlim(0, max(max(p.rps_samples) for _, p in peaks) * 1.9)
    ax.grid(axis="y", visible=False)
    title = f"{test_label(test)}: peak throughput by target ({mode} loop)"
    set_title(ax, title)
    handles = flag_legend(flagged)
    if handles:
        ax.legend(handles=[Patch(facecolor="white", edgecolor=FLAG_COLOUR, hatch="xx",
                                 label=handles[0].get_label())], loc="lower right", fontsize=8)  # fmt: skip
    return Drawn(f"peak-{test}", title, fig, flagged)


def _series(points: Iterable[Point], dimension: str) -> dict[str, list[Point]]:
    """Points split into lines: one per target, and per fixed level when other level columns vary."""
    points = list(points)
    others = [d for d in ("concurrency", "pipeline", "queries") if d != dimension]
    varying = [d for d in others if len({p.level.value(d) for p in points}) > 1]
    out: dict[str, list[Point]] = {}
    for p in points:
        suffix = " ".join(f"{d[0]}={p.level.value(d)}" for d in varying)
        out.setdefault(f"{p.target} {suffix}".strip(), []).append(p)
    for line in out.values():
        line.sort(key=lambda p: p.level.value(dimension) or 0)
    return out


def _log2_axis(ax: Any, values: Iterable[float]) -> None:
    ticks = sorted({v for v in values if v and v > 0})
    if len(ticks) > 1 and ticks[-1] / ticks[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _swept(run: Run, test: str) -> str:
    """The level field the scaling chart puts on x: the test's own (its parameter, if it takes
    one), unless the run held that at one value and swept connections instead."""
    own = x_dimension(test, LoadMode.CLOSED)
    points = [p for t in run.targets for p in run.points_for(t, test, LoadMode.CLOSED)]
    held = len({p.level.value(own) for p in points}) < 2
    return "concurrency" if held and len({p.level.concurrency for p in points}) >= 2 else own


def _axis_label(test: str, dimension: str) -> str:
    spec = TEST_TYPES.get(test)
    return WAIT_LABEL if dimension == "queries" and spec is not None and spec.waits else AXIS_LABELS[dimension]


def _scaling(run: Run, test: str) -> Drawn | None:
    """Throughput against load; only drawn when some target ran more than one level (else: the peak chart)."""
    dimension = _swept(run, test)
    if max((len({p.level for p in run.points_for(t, test, LoadMode.CLOSED)}) for t in run.targets), default=0) < 2:
        return None
    fig, (ax,) = figure()
    flagged, xs = False, []
    for target in run.targets:
        for label, line in _series(run.points_for(target, test, LoadMode.CLOSED), dimension).items():
            x = [p.level.value(dimension) or 0 for p in line]
            y = [p.rps for p in line]
            lo = [p.rps - min(p.rps_samples) for p in line]
            hi = [max(p.rps_samples) - p.rps for p in line]
            ax.errorbar(x, y, yerr=[lo, hi], color=colour(target), marker=marker(target), capsize=3, label=label)
            xs += x
            for p, xv in zip(line, x, strict=True):
                if p.flags:
                    flagged = True
                    ring(ax, xv, p.rps)
    if not xs:
        return None
    _log2_axis(ax, xs)
    ax.set_xlabel(_axis_label(test, dimension) + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    title = f"{test_label(test)}: throughput against {_axis_label(test, dimension)} (median, whiskers min..max)"
    set_title(ax, title)
    handles, _ = ax.get_legend_handles_labels()
    legend(ax, handles + flag_legend(flagged), "best")
    return Drawn(f"scaling-{test}", title, fig, flagged)


def _spectrum_x(percentile: float) -> float:
    """Percentiles spread so the tail gets room: p50 -> 0.3, p99 -> 2, p99.99 -> 4."""
    return -math.log10(1 - percentile / 100)


def _spectrum(run: Run, test: str) -> Drawn | None:
    mode = _primary_mode(run, test)
    if mode is None:
        return None
    fig, (ax,) = figure()
    flagged, drawn = False, False
    for target in run.targets:
        point = run.peak(target, test, mode)
        if point is None:
            continue
        xy = [(_spectrum_x(pct), v) for col, pct in PERCENTILES if (v := point.median(col)) is not None and v > 0]
        if not xy:
            continue
        bad = bool(point.flags)
        flagged |= bad
        label = f"{target} at {point.label}" + (f"  {flag_note(point.flags)}" if bad else "")
        ax.plot(*zip(*xy, strict=True), color=colour(target), marker=marker(target),
                linestyle="--" if bad else "-", label=label)  # fmt: skip
        if bad:
            for x, y in xy:
                ring(ax, x, y)
        drawn = True
    if not drawn:
        return None
    _log_ms_axis(ax)
    ax.xaxis.set_major_locator(FixedLocator([_spectrum_x(p) for _, p in PERCENTILES]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _percentile_name(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("percentile (tail to the right)")
    ax.set_ylabel("latency (ms, log scale)")
    title = f"{test_label(test)}: latency percentiles at each target's peak ({mode} loop, median of repeats)"
    set_title(ax, title)
    handles, _ = ax.get_legend_handles_labels()
    legend(ax, handles + flag_legend(flagged), "upper left")
    return Drawn(f"latency-{test}", title, fig, flagged)


def _log_ms_axis(ax: Any) -> None:
    """Log latency axis labelled 1, 2, 5, 10, 20, 50 ... in plain numbers, never 4x10^2."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _percentile_name(x: float) -> str:
    for _, pct in PERCENTILES:
        if abs(_spectrum_x(pct) - x) < 1e-6:
            return f"p{pct:g}"
    return ""


def _open_loop(run: Run, test: str) -> Drawn | None:
    if LoadMode.OPEN not in run.modes(test):
        return None
    fig, (ax,) = figure()
    flagged, xs = False, []
    for target in run.targets:
        for label, line in _series(run.points_for(target, test, LoadMode.OPEN), "offered_rps").items():
            line = _up_to_knee(line)
            for column, style, name in (("latency_p99_ms", "-", "p99"), ("latency_p50_ms", ":", "p50")):
                xy = [(p.level.offered_rps, v, p) for p in line if (v := p.median(column)) is not None and v > 0]
                if not xy:
                    continue
                x, y, pts = zip(*xy, strict=True)
                ax.plot(
                    x,
                    y,
                    color=colour(target),
                    marker=marker(target),
                    linestyle=style,
                    label=f"{label} {name}",
                )
                xs += x
                for xv, yv, p in zip(x, y, pts, strict=True):
                    if p.flags:
                        flagged = True
                        ring(ax, xv, yv)
    if not xs:
        return None
    bound = p99_bound_ms(run)
    ax.axhline(bound, color="grey", linestyle="--", linewidth=1, label=f"p99 bound {bound:g} ms")
    _log_ms_axis(ax)
    ax.set_xlabel(AXIS_LABELS["offered_rps"])
    ax.set_ylabel("latency (ms, log scale)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    title = f"{test_label(test)}: open-loop latency against offered rate, up to the first overloaded rate"
    set_title(ax, title)
    handles, _ = ax.get_legend_handles_labels()
    legend(ax, handles + flag_legend(flagged), "upper left")
    return Drawn(f"openloop-{test}", title, fig, flagged)


def _up_to_knee(line: list[Point]) -> list[Point]:
    """Points up to and including the first overloaded one: beyond it latency only says "overloaded"."""
    for i, p in enumerate(line):
        if any(s.overloaded for s in p.steps):
            return line[: i + 1]
    return line


def _resources(run: Run) -> Drawn | None:
    """Server CPU and RSS at each target's closed-loop peak, per test: what the throughput cost."""
    rows = []
    for test in run.tests:
        mode = _primary_mode(run, test)
        for target in run.targets:
            point = run.peak(target, test, mode) if mode else None
            if point is not None:
                rows.append((test, target, point))
    cpu = [(t, g, p.resource("server_cpu_cores"), p) for t, g, p in rows]
    rss = [(t, g, p.resource("server_pss_mb") or p.resource("server_rss_mb"), p) for t, g, p in rows]
    if not any(v is not None for _, _, v, _ in cpu + rss):
        return None
    fig, axes = figure(ncols=2)
    tests = [t for t in run.tests if any(r[0] == t for r in rows)]
    width = 0.8 / max(1, len(run.targets))
    flagged = False
    for ax, values, ylabel in ((axes[0], cpu, "server CPU used (cores)"), (axes[1], rss, "server memory, PSS (MB)")):
        for j, target in enumerate(run.targets):
            for test, tgt, value, point in values:
                if tgt != target or value is None:
                    continue
                bad = bool(point.flags)
                flagged |= bad
                ax.bar(tests.index(test) + (j - (len(run.targets) - 1) / 2) * width, value, width,
                       color=colour(target), hatch="xx" if bad else None,
                       edgecolor=FLAG_COLOUR if bad else colour(target))  # fmt: skip
        ax.set_xticks(range(len(tests)), tests, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
    allowed = _target_cpu_count(run)
    if allowed:
        axes[0].axhline(allowed, color="black", linestyle=":", linewidth=1)
        axes[0].annotate(f"CPUs in target cpuset: {allowed}", (0, allowed), xytext=(2, 3),
                         textcoords="offset points", fontsize=8)  # fmt: skip
    axes[0].set_title("CPU at each target's peak")
    axes[1].set_title("memory at each target's peak")
    handles = [Patch(color=colour(t), label=t) for t in run.targets]
    if flagged:
        handles.append(Patch(facecolor="white", edgecolor=FLAG_COLOUR, hatch="xx",
                             label=f"{WARN} client-bound, errors or drops"))  # fmt: skip
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    title = "Server CPU and memory per target (closed loop, at each test's peak)"
    fig.suptitle(title, fontsize=10)
    return Drawn("resources", title, fig, flagged)


def _decomposition(factors: list[Factor], tests: list[str]) -> Drawn | None:
    """One row per comparison, one dot per test: the ratio at the two targets' peaks, with its
    95 % interval as a bar, on a log axis around 1 (no difference)."""
    rows = list(dict.fromkeys(f.label for f in factors if f.estimate.ratio is not None))
    if not rows:
        return None
    fig, (ax,) = figure(height=max(2.6, 0.42 * len(rows) + 1.4))
    fig.set_figwidth(fig.get_figwidth() * 1.2)  # room for the steps' names on the left
    tests = [t for t in tests if any(f.test == t for f in factors)]
    band = 0.7 / max(1, len(tests))
    for j, test in enumerate(tests):
        for f in factors:
            e = f.estimate
            if f.test != test or e.ratio is None:
                continue
            y = rows.index(f.label) + (j - (len(tests) - 1) / 2) * band
            if e.low is not None and e.high is not None:
                ax.plot([e.low, e.high], [y, y], color=PALETTE[j % len(PALETTE)], linewidth=1.4, alpha=0.7)
            ax.plot([e.ratio], [y], linestyle="none", marker=MARKERS[j % len(MARKERS)], markersize=5,
                    color=PALETTE[j % len(PALETTE)])  # fmt: skip
    ax.axvline(1.0, color="#333333", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(RATIO_TICKS))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("requests/s of the second target / the first's, at their peaks (log scale; 1× = no difference)")
    handles = [Line2D([], [], linestyle="none", marker=MARKERS[j % len(MARKERS)], color=PALETTE[j % len(PALETTE)],
                      label=test) for j, test in enumerate(tests)]  # fmt: skip
    fig.legend(handles=handles, fontsize=8, loc="outside right upper")
    title = "Where the difference comes from: throughput ratio per step (dot), 95 % interval (bar)"
    fig.suptitle(title, fontsize=10)
    return Drawn("decomposition", title, fig, False)


def _target_cpu_count(run: Run) -> int | None:
    """The size of the targets' cpuset when all share one size, for a reference line."""
    sets = lookup(run.meta, "cpus", "targets")
    values = sets.values() if isinstance(sets, Mapping) else [sets]
    sizes = {len(cpus) for v in values if (cpus := cpu_list(v))}
    return sizes.pop() if len(sizes) == 1 else None


