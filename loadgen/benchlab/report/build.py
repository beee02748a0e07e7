"""``report.html``, ``summary.csv`` and chart PNGs for one run directory.

The HTML is one self-contained file (inline CSS and SVG, no scripts, no fonts, no
network), so it can be mailed, archived or opened offline and still show everything.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from benchlab import __version__
from benchlab.analysis.analyse import SUMMARY_COLUMNS, Analysis, analyse
from benchlab.analysis.run import PERCENTILES, UNKNOWN, Run, cpusets, load_run, lookup, show
from benchlab.analysis.stats import CONFIDENCE
from benchlab.config.claims import load_claims
from benchlab.contract import test_label
from benchlab.model.level import AXIS_TITLE
from benchlab.model.step import Step
from benchlab.profiling.section import ProfileSection, profile_section
from benchlab.report.charts import render_charts
from benchlab.report.plotting import WARN, Chart, context_line

REPORT_HTML = "report.html"
SUMMARY_CSV = "summary.csv"
CHARTS_DIR = "charts"
TEMPLATES = Path(__file__).with_name("templates")
TARGET_FIELDS = ("framework", "server", "worker_class", "style", "group", "workers", "python", "url")


def build_report(run_dir: Path, claims_path: Path | None = None) -> Path:
    """Writes the report files into ``run_dir`` and returns the path of ``report.html``."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    claims = load_claims(claims_path)  # a bad claims file fails before any drawing
    charts_dir = run_dir / CHARTS_DIR
    charts_dir.mkdir(exist_ok=True)
    for old in charts_dir.glob("*.png"):
        old.unlink()
    analysis = analyse(run, claims)
    charts = render_charts(analysis, charts_dir)
    _write_atomic(run_dir / SUMMARY_CSV, _csv_text(analysis.summary))
    page = render_html(analysis, charts, claims_path, profile_section(analysis, charts_dir))
    out = run_dir / REPORT_HTML
    _write_atomic(out, page)
    return out


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in SUMMARY_COLUMNS})
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- HTML


def render_html(
    analysis: Analysis, charts: Mapping[str, Sequence[Chart]], claims_path: Path | None,
    profile: ProfileSection | None = None,
) -> str:  # fmt: skip
    """The page: one section per part of the analysis (``templates/sections``), in reading order."""
    run = analysis.run
    claim_results = analysis.claims
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["num"] = _num
    env.filters["show"] = show
    env.filters["test_label"] = test_label
    meta = run.meta
    return env.get_template("report.html.j2").render(
        run=run,
        run_id=run.run_id,
        warn=WARN,
        status=show(meta.get("status")),
        facts=_facts(run),
        context=context_line(meta),
        cpusets=cpusets(meta),
        targets=_targets_info(run),
        engines=_mapping_items(meta.get("engines")),
        scenario=json.dumps(meta.get("scenario"), indent=2, sort_keys=True, default=str)
        if meta.get("scenario") is not None
        else "unknown",
        summary=analysis.summary,
        sections=[(test, charts.get(test, []), _point_rows(run, test), analysis.sustainable[test],
                   analysis.scaling_for(test)) for test in run.tests],
        p99_bound=analysis.p99_bound_ms,
        resources=charts.get("resources", []),
        leads=analysis.leads,
        factors=analysis.factors,
        swept=[AXIS_TITLE[a] for a in run.varying_axes],
        decomposition_charts=charts.get("decomposition", []),
        svg=lambda chart: Markup(chart.svg),  # matplotlib escapes its own text
        claims=[(c, [r for r in claim_results if r.claim is c]) for c in dict.fromkeys(r.claim for r in claim_results)],
        claims_unmeasured=analysis.claims_unmeasured,
        claims_file=str(claims_path) if claims_path else "built-in claims.yaml",
        confidence=f"{CONFIDENCE:.0%}",
        failed=[_failed_row(s) for s in run.failed_steps()],
        sweeps=analysis.sweeps,
        sweep_findings=analysis.sweep_findings,
        percentiles=[f"p{p:g}" for _, p in PERCENTILES],
        version=__version__,
        profile=profile,
    )


def _num(value: Any, digits: int = 0) -> str:
    if value is None or value == "":
        return "–"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _facts(run: Run) -> list[tuple[str, str]]:
    meta = run.meta
    return [
        ("scenario", show(meta.get("scenario_name"))),
        ("status", show(meta.get("status"))),
        ("started", show(meta.get("started_at"))),
        ("finished", show(meta.get("finished_at"))),
        ("mode", show(meta.get("mode"))),
        ("CPU", show(lookup(meta, "host", "cpu_model"))),
        ("cores", show(lookup(meta, "host", "cores"))),
        ("memory (GB)", show(lookup(meta, "host", "memory_gb"))),
        ("kernel", show(lookup(meta, "host", "kernel"))),
        ("platform", show(lookup(meta, "host", "platform"))),
        ("open-file limit", show(meta.get("nofile_limit"))),
        ("benchlab", f"{show(meta.get('benchlab_version'))} (commit {show(meta.get('git_commit'))})"),
    ]


def _mapping_items(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping) or not value:
        return [("-", "unknown")]
    return [(str(k), _text(v)) for k, v in value.items()]


def _text(value: Any) -> str:
    """A run.json value in a table cell; a mapping (k6's provenance) as ``key: value`` pairs."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {show(v)}" for k, v in value.items()) or UNKNOWN
    return show(value)


def _targets_info(run: Run) -> list[dict[str, Any]]:
    info = run.meta.get("targets")
    info = info if isinstance(info, Mapping) else {}
    names = list(run.targets) + [n for n in info if n not in run.targets]
    out = []
    for name in names:
        entry = info.get(name) if isinstance(info.get(name), Mapping) else {}
        packages = entry.get("packages")
        listed = ", ".join(f"{k} {v}" for k, v in packages.items()) if isinstance(packages, Mapping) else ""
        fields = [(k, show(entry.get(k))) for k in TARGET_FIELDS]
        out.append({"name": name, "fields": fields, "packages": listed or show(None)})
    return out


def _point_rows(run: Run, test: str) -> list[dict[str, Any]]:
    rows = []
    for mode in run.modes(test):
        for target in run.targets:
            for axes in run.axes_of(target, test):
                peak = run.peak(target, test, mode, axes)
                for p in run.points_for(target, test, mode, axes):
                    rows.append(
                        {
                            "target": target,
                            "mode": mode,
                            "level": p.label_in(run),
                            "n": len(p.rps_samples),
                            "rps": p.rps,
                            "rps_range": f"{min(p.rps_samples):,.0f}–{max(p.rps_samples):,.0f}",
                            "p50": p.median("latency_p50_ms"),
                            "p99": p.median("latency_p99_ms"),
                            "p999": p.median("latency_p999_ms"),
                            "errors": p.errors,
                            "cpu": p.resource("server_cpu_cores"),
                            "flags": ", ".join(p.flags),
                            "peak": p is peak,
                        }
                    )
    return rows


def _failed_row(step: Step) -> dict[str, Any]:
    return {
        "target": step.target,
        "test": step.test,
        "mode": step.mode,
        "level": step.level.label,
        "repeat": step.repeat,
        "verification": step.verification,
    }
