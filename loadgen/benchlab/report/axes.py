"""The chart of each swept axis in a test's section: throughput at each value of the axis (each
target at its peak there), with ideal linear scaling from the first value dotted for an axis that
counts CPUs, and the scaling efficiency at each point (``analysis.scaling``)."""

from __future__ import annotations

from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from benchlab.analysis.scaling import Scaling
from benchlab.contract import test_label
from benchlab.model.level import Axes
from benchlab.report.plotting import Drawn, colour, figure, flag_legend, legend, marker, ring, set_title


def axis_chart(lines: list[Scaling], axis: str) -> Drawn | None:
    lines = [s for s in lines if s.axis == axis]
    if not lines:
        return None
    test, title_axis, per_unit = lines[0].test, lines[0].title, lines[0].per_unit
    values = sorted({v.value for s in lines for v in s.values}, key=lambda v: Axes(**{axis: v}).sort_key)
    numeric = all(isinstance(v, int | float) for v in values)
    fig, (ax,) = figure()
    flagged = False
    for s in lines:
        x = [v.value if numeric else values.index(v.value) for v in s.values]
        y = [v.peak.rps for v in s.values]
        ax.plot(x, y, color=colour(s.target), marker=marker(s.target), label=s.target)
        if per_unit and numeric:
            ax.plot(x, [y[0] * n / x[0] for n in x], color=colour(s.target), linestyle=":", linewidth=1)
        for xv, v in zip(x, s.values, strict=True):
            if v.efficiency is not None:
                ax.annotate(f"{v.efficiency:.0%}", (xv, v.peak.rps), xytext=(4, -10), textcoords="offset points",
                            fontsize=7, color=colour(s.target))  # fmt: skip
            if v.peak.flags:
                flagged = True
                ring(ax, xv, v.peak.rps)
    ax.xaxis.set_major_locator(FixedLocator([v if numeric else i for i, v in enumerate(values)]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if numeric else str(values[int(v)])))
    ax.set_xlabel(title_axis + (" (each pinned to as many of the targets' CPUs)" if per_unit else ""))
    ax.set_ylabel("throughput at peak (requests/s)")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    title = f"{test_label(test)}: throughput against {title_axis} (median, each target at its peak)"
    set_title(ax, title)
    handles, _ = ax.get_legend_handles_labels()
    if per_unit:
        handles.append(Line2D([], [], color="grey", linestyle=":", label="linear from the first value; % = efficiency"))
    legend(ax, handles + flag_legend(flagged), "best")
    return Drawn(f"{axis}-{test}", title, fig, flagged)
