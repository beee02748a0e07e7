"""A concurrency sweep's edge levels, derived from the recorded smoke run: no lab, well under a second.

A level where nothing came back inside the step (every request still queued when wrk stopped, so
counted neither as an answer nor as a timeout) is a finding; a sweep whose fewest connections
served nothing has no base to compare against and says so instead of dividing by zero.
"""

from __future__ import annotations

from pathlib import Path

from derived_runs import copy_run, rewrite_rows

from benchlab.analysis.run import load_run
from benchlab.analysis.sweep import concurrency_sweeps

OLD = Path(__file__).parents[1] / "fixtures" / "smoke-v1"
LEVELS = (64, 256, 1024, 4096)


def _sweep(tmp_path: Path, silent: int) -> Path:
    """The fixture's json rows repeated at LEVELS; at ``silent`` connections nothing was answered."""
    run = copy_run(OLD, tmp_path / "run")

    def spread(row: dict[str, str]) -> list[dict[str, str]]:
        if row["test"] != "json" or row["mode"] != "closed":
            return [row]
        out = []
        for c in LEVELS:
            new = {**row, "concurrency": str(c)}
            new["step_id"] = row["step_id"].replace(f"c{row['concurrency']}-", f"c{c}-")
            if c == silent:
                new.update(requests="0", rps="0")
            out.append(new)
        return out

    rewrite_rows(run, spread)
    return run


def test_a_level_with_no_response_within_the_step_is_a_finding(tmp_path: Path) -> None:
    sweeps = [s for s in concurrency_sweeps(load_run(_sweep(tmp_path, silent=LEVELS[-1]))) if s.test == "json"]
    assert sweeps
    for s in sweeps:
        (finding,) = s.findings()
        assert finding.endswith("at 4,096 connections: no response within the step")
        assert s.holds_up().startswith("0.00x the throughput")


def test_nothing_served_at_the_fewest_connections_leaves_no_base(tmp_path: Path) -> None:
    sweeps = [s for s in concurrency_sweeps(load_run(_sweep(tmp_path, silent=LEVELS[0]))) if s.test == "json"]
    assert sweeps and all(s.holds_up() == "no throughput at one end of the sweep to compare" for s in sweeps)
