"""The report's Connections section: a concurrency sweep derived from a real smoke run (its json
rows repeated at four connection counts, the top one with connection errors and timeouts), and
claims that name their workload. Fast once the session's smoke run exists."""

from __future__ import annotations

from pathlib import Path

from derived_runs import copy_run, rewrite_rows, scaled

from benchlab.analysis.run import load_run
from benchlab.analysis.sweep import concurrency_sweeps
from benchlab.config.claims import load_claims
from benchlab.report.build import build_report

LEVELS = (64, 256, 1024, 4096)


def _sweep_run(smoke_run: Path, tmp_path: Path) -> Path:
    run = copy_run(smoke_run, tmp_path / "run")

    def spread(row: dict[str, str]) -> list[dict[str, str]]:
        if row["test"] != "json" or row["mode"] != "closed":
            return [row]
        out = []
        for i, c in enumerate(LEVELS):
            new = {**scaled(row, rps=1 + 0.1 * i, latency=1 + i), "concurrency": str(c)}
            new["step_id"] = row["step_id"].replace(f"c{row['concurrency']}-", f"c{c}-")
            if c == LEVELS[-1]:
                new.update(errors_connect="120", errors_timeout="7")
            out.append(new)
        return out

    rewrite_rows(run, spread)
    return run


def test_sweep_reads_every_level_and_reports_errors_as_findings(smoke_run: Path, tmp_path: Path) -> None:
    run = _sweep_run(smoke_run, tmp_path)
    sweeps = [s for s in concurrency_sweeps(load_run(run)) if s.test == "json"]
    assert sweeps and all([lv.connections for lv in s.levels] == list(LEVELS) for s in sweeps)
    for s in sweeps:
        (finding,) = s.findings()
        assert "at 4,096 connections: 120 connect errors, 7 timeouts" in finding
        assert "x the p99 at 4,096 connections against 64" in s.holds_up()
    assert not [s for s in concurrency_sweeps(load_run(run)) if s.test != "json"]  # one level each: no sweep
    page = build_report(run).read_text()
    assert 'id="connections"' in page and "120 connect errors, 7 timeouts" in page


def test_a_sweep_that_served_nothing_at_a_level_still_reports(smoke_run: Path, tmp_path: Path) -> None:
    """A level with no successful response (a thread pool swamped by 4,096 waits) has rps 0."""
    run = _sweep_run(smoke_run, tmp_path)
    rewrite_rows(run, lambda r: [{**r, "rps": "0"} if r["test"] == "json" else r])
    (sweep, *_) = [s for s in concurrency_sweeps(load_run(run)) if s.test == "json"]
    assert sweep.holds_up() == "no throughput at one end of the sweep to compare"
    page = build_report(run).read_text()
    assert 'id="connections"' in page and "120 connect errors, 7 timeouts" in page


def test_claims_name_their_workload_and_tfb_only_verdicts_say_so() -> None:
    claims = {c.id: c for c in load_claims()}
    assert claims["fastapi-outperforms-flask"].workload_label.startswith("TechEmpower's tests only")
    io = claims["fastapi-io-bound-upstream-vs-flask-gthread"]
    assert "upstream" in io.workload_label and "not TechEmpower's" in io.workload_label
    assert {c.where for c in io.checks} == {
        "at concurrency=256 ms=20", "at concurrency=256 ms=200",
    }  # fmt: skip
    assert claims["flask-routing-slower-with-many-routes"].checks[0].relative_to == "json"
