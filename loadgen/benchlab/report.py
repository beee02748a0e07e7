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
from benchlab.capacity import Sustainable, p99_bound_ms, sustainable_rate
from benchlab.charts import render_charts
from benchlab.claims import Claim, PairingResult, evaluate_claims, load_claims, unmeasured
from benchlab.findings import decomposition, leads
from benchlab.model.modes import LoadMode
from benchlab.model.step import Step
from benchlab.plotting import WARN, Chart, context_line
from benchlab.rundata import (
    PERCENTILES,
    UNKNOWN,
    Point,
    Run,
    cpusets,
    load_run,
    lookup,
    show,
)
from benchlab.stats import CONFIDENCE

REPORT_HTML = "report.html"
SUMMARY_CSV = "summary.csv"
CHARTS_DIR = "charts"
TEMPLATES = Path(__file__).with_name("templates")
TARGET_FIELDS = ("framework", "server", "worker_class", "style", "group", "workers", "python", "url")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "target", "test", "mode", "peak_level", "concurrency", "pipeline", "queries", "offered_rps",
    "repeats", "peak_rps", "rps_min", "rps_max", "p99_ms", "server_cpu_cores", "rps_per_core",
    "server_pss_mb", "server_rss_mb", "loadgen_cpu_cores", "errors_at_peak", "errors_total", "failed_steps",
    "sustainable_rps", "sustainable_limit", "flags",
)  # fmt: skip


def build_report(run_dir: Path, claims_path: Path | None = None) -> Path:
    """Writes the report files into ``run_dir`` and returns the path of ``report.html``."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    claims = load_claims(claims_path)  # a bad claims file fails before any drawing
    charts_dir = run_dir / CHARTS_DIR
    charts_dir.mkdir(exist_ok=True)
    for old in charts_dir.glob("*.png"):
        old.unlink()
    charts = render_charts(run, charts_dir)
    summary = summary_rows(run)
    _write_atomic(run_dir / SUMMARY_CSV, _csv_text(summary))
    page = render_html(run, summary, charts, evaluate_claims(run, claims), unmeasured(run, claims), claims_path)
    out = run_dir / REPORT_HTML
    _write_atomic(out, page)
    return out


def summary_rows(run: Run) -> list[dict[str, Any]]:
    """Per target x test x mode: the peak level and what it cost; failed combinations too."""
    rows = []
    for test in run.tests:
        for target in run.targets:
            steps = [s for s in run.steps if s.target == target and s.test == test]
            if not steps:
                continue
            modes = sorted({s.mode for s in steps}, key=lambda m: (m != LoadMode.CLOSED, m))
            for mode in modes:
                mine = [s for s in steps if s.mode == mode]
                peak = run.peak(target, test, mode)
                row: dict[str, Any] = {c: "" for c in SUMMARY_COLUMNS}
                row.update(
                    target=target,
                    test=test,
                    mode=mode,
                    errors_total=sum(s.errors for s in mine),
                    failed_steps=sum(not s.ok for s in mine),
                )
                if mode == LoadMode.OPEN and (sustainable := sustainable_rate(run, target, test)) is not None:
                    row.update(sustainable_rps=_round(sustainable.rps, 1), sustainable_limit=sustainable.limited_by)
                if peak is not None:
                    row.update(_peak_fields(peak))
                else:
                    row["flags"] = "no successful step: " + "; ".join(sorted({s.verification for s in mine}))
                rows.append(row)
    return rows


def _peak_fields(peak: Point) -> dict[str, Any]:
    cpu = peak.resource("server_cpu_cores")
    return {
        "peak_level": peak.label,
        "concurrency": peak.level.concurrency,
        "pipeline": peak.level.pipeline,
        "queries": peak.level.queries,
        "offered_rps": peak.level.offered_rps,
        "repeats": len(peak.rps_samples),
        "peak_rps": round(peak.rps, 1),
        "rps_min": round(min(peak.rps_samples), 1),
        "rps_max": round(max(peak.rps_samples), 1),
        "p99_ms": _round(peak.median("latency_p99_ms"), 3),
        "server_cpu_cores": _round(cpu, 3),
        "rps_per_core": round(peak.rps / cpu, 1) if cpu else None,
        "server_pss_mb": _round(peak.resource("server_pss_mb"), 1),
        "server_rss_mb": _round(peak.resource("server_rss_mb"), 1),
        "loadgen_cpu_cores": _round(peak.resource("loadgen_cpu_cores"), 3),
        "errors_at_peak": peak.errors,
        "flags": "; ".join(peak.flags),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


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
    run: Run,
    summary: Sequence[Mapping[str, Any]],
    charts: Mapping[str, Sequence[Chart]],
    claim_results: Sequence[PairingResult],
    claims_unmeasured: Sequence[tuple[Claim, list[str]]],
    claims_path: Path | None,
) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["num"] = _num
    env.filters["show"] = show
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
        summary=summary,
        sections=[(test, charts.get(test, []), _point_rows(run, test), _sustainable(run, test)) for test in run.tests],
        p99_bound=p99_bound_ms(run),
        resources=charts.get("resources", []),
        leads=leads(run),
        factors=decomposition(run),
        decomposition_charts=charts.get("decomposition", []),
        svg=lambda chart: Markup(chart.svg),  # matplotlib escapes its own text
        claims=[(c, [r for r in claim_results if r.claim is c]) for c in dict.fromkeys(r.claim for r in claim_results)],
        claims_unmeasured=claims_unmeasured,
        claims_file=str(claims_path) if claims_path else "built-in claims.yaml",
        confidence=f"{CONFIDENCE:.0%}",
        failed=[_failed_row(s) for s in run.failed_steps()],
        percentiles=[f"p{p:g}" for _, p in PERCENTILES],
        version=__version__,
    )


def _sustainable(run: Run, test: str) -> list[Sustainable]:
    return [s for t in run.targets if (s := sustainable_rate(run, t, test)) is not None]


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
            peak = run.peak(target, test, mode)
            for p in run.points_for(target, test, mode):
                rows.append(
                    {
                        "target": target,
                        "mode": mode,
                        "level": p.label,
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
