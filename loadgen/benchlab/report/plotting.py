"""What every chart of the report shares: its look, its colours, its footer and how it is saved.

Each chart is drawn once and written twice: inline SVG for the HTML, PNG beside it. Every
chart carries a footer with the hardware and cpusets, so a PNG lifted out of the report still
says what it measured; figures from client-bound steps or steps with errors are marked in red.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from benchlab.analysis.run import cpusets, lookup, show, target_order
from benchlab.hosts.network import describe_rtt
from benchlab.sampling import BUSY_AT_START

WARN = "⚠"
FLAG_COLOUR = "#d62728"
# One colour and one marker per registered target (twelve), in registry order.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22",
    "#aec7e8", "#ffbb78", "#98df8a",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
RC = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, testable
    "svg.hashsalt": "benchlab",  # deterministic ids; made unique per chart below
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
WIDTH_IN, HEIGHT_IN, PNG_DPI = 8.0, 4.4, 120
IN_AXES_MAX = 10  # legend entries that fit inside the axes; more go beside them


@dataclass(frozen=True)
class Chart:
    """One drawn chart: where its PNG is, its inline SVG, and whether it shows flagged figures."""

    name: str
    title: str
    svg: str
    png: Path
    flagged: bool


def context_line(meta: Mapping[str, Any]) -> str:
    """Hardware and cpusets in one line for chart footers: what a reader needs to judge a number."""
    host = (
        f"{show(lookup(meta, 'host', 'cpu_model'))}, {show(lookup(meta, 'host', 'cores'))} cores, "
        f"{show(lookup(meta, 'host', 'memory_gb'))} GB, kernel {show(lookup(meta, 'host', 'kernel'))}, "
        f"mode {show(meta.get('mode'))}"
    )
    sets = "; ".join(f"{role} {cpus}" for role, cpus in cpusets(meta))
    line = f"host: {host} | cpusets: {sets} | run {show(meta.get('run_id'))}"
    rtt = lookup(meta, "hosts", "rtt_ms")
    if isinstance(rtt, Mapping) and rtt:  # a split run (--hosts): the network's floor under every latency
        line += f" | network round trip: {describe_rtt(rtt)}"
    return line


def colour(target: str) -> str:
    order = target_order()
    idx = order.index(target) if target in order else len(order) + sum(map(ord, target))
    return PALETTE[idx % len(PALETTE)]


def marker(target: str) -> str:
    order = target_order()
    idx = order.index(target) if target in order else sum(map(ord, target))
    return MARKERS[idx % len(MARKERS)]


@dataclass
class Drawn:
    name: str
    title: str
    fig: Figure
    flagged: bool


def figure(ncols: int = 1, height: float = HEIGHT_IN) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(WIDTH_IN * (1 if ncols == 1 else 1.15), height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def flag_legend(flagged: bool) -> list[Any]:
    if not flagged:
        return []
    return [
        Line2D([], [], linestyle="none", marker="o", markersize=11, markerfacecolor="none",
               markeredgecolor=FLAG_COLOUR, markeredgewidth=1.6,
               label=f"{WARN} client-bound, errors, drops or a warning: do not quote"),
    ]  # fmt: skip


def set_title(ax: Any, text: str) -> None:
    """A long test name over narrow axes wraps within the figure rather than running off it."""
    ax.set_title(text, wrap=True)


def legend(ax: Any, handles: list[Any], loc: str) -> None:
    """Inside the axes while short; beside them when long (a run of many targets), the figure
    grown to hold it, so the axes keep their size."""
    if len(handles) <= IN_AXES_MAX:
        ax.legend(handles=handles, fontsize=8, loc=loc)
        return
    fig = ax.figure
    fig.set_size_inches(fig.get_figwidth() * 1.3, max(fig.get_figheight(), 1.6 + 0.17 * len(handles)))
    fig.legend(handles=handles, fontsize=7, loc="outside right center")


def flag_note(flags: tuple[str, ...]) -> str:
    """A point's flags as a chart shows them: a warning by its kind only (its sentence is in the
    report's tables)."""
    short = dict.fromkeys(_kind(f) for f in flags)
    return f"{WARN} {', '.join(short)}"


def _kind(flag: str) -> str:
    if not flag.startswith("warn: "):  # client-bound, errors, drops...: short already
        return flag
    return "busy at start" if BUSY_AT_START in flag else "warning"


def ring(ax: Any, x: float, y: float) -> None:
    ax.plot([x], [y], linestyle="none", marker="o", markersize=13, markerfacecolor="none",
            markeredgecolor=FLAG_COLOUR, markeredgewidth=1.6, zorder=5)  # fmt: skip


def add_footer(fig: Figure, footer: str) -> None:
    # As the figure's x label, constrained layout keeps axes and legends clear of the footer.
    fig.supxlabel("\n".join(textwrap.wrap(footer, 170, break_on_hyphens=False)), x=0.005, ha="left",
                  fontsize=6.5, color="#555555")  # fmt: skip


def save(drawn: Drawn, footer: str, out_dir: Path) -> Chart:
    fig = drawn.fig
    add_footer(fig, footer)
    png = out_dir / f"{drawn.name}.png"
    buf = io.StringIO()
    fig.savefig(png, dpi=PNG_DPI, metadata={"Software": None})
    # Solved again for the SVG's 72 dpi: hinted text is narrower at the PNG's 120 (a label of the
    # decomposition 245 pt against 251), and a layout kept from the PNG cut such labels in the report.
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return Chart(drawn.name, drawn.title, inline_svg(buf.getvalue(), drawn.name), png, drawn.flagged)


def inline_svg(svg: str, prefix: str) -> str:
    """Strips the XML prolog and makes every id unique to this chart, so many SVGs share one page."""
    svg = svg[svg.index("<svg") :]
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    pre = re.sub(r"[^A-Za-z0-9_-]", "_", prefix) + "-"

    def rename(match: re.Match[str]) -> str:
        head, name, tail = match.group(1), match.group(2), match.group(3)
        return f"{head}{pre}{name}{tail}" if name in ids else match.group(0)

    svg = re.sub(r'(\bid=")([^"]+)(")', rename, svg)
    svg = re.sub(r"(url\(#)([^)]+)(\))", rename, svg)
    return re.sub(r'(href="#)([^"]+)(")', rename, svg)
