"""The open-loop sweep and the sustainable rate, from a real run against the real lab."""

from __future__ import annotations

import csv
from pathlib import Path

from helpers import only_run_dir, run_benchlab

from benchlab.harness import NativeLab
from benchlab.model.codec import read_rows

# 50 and 100 req/s any server here serves in full; 100,000 req/s no target (or k6) reaches on 2 cores.
SWEEP = """\
name: sweep
duration_s: 2
pause_s: 0
primer: {duration_s: 1, connections: 8}
warmup: false
repeats: 1
tests:
  json:
    concurrency: [16]
open_loop:
  tests: [json]
  rates: [50, 100, 100000]
  p99_ms: 250
  duration_s: 3
  vus: 16
  max_vus: 256
"""


def test_sweep_marks_the_overloaded_rate_and_reports_the_sustainable_one(lab: NativeLab, tmp_path: Path) -> None:
    scenario = tmp_path / "sweep.yaml"
    scenario.write_text(SWEEP)
    proc = run_benchlab("run", "--scenario", str(scenario), "--targets", "fastapi-uvicorn", "--dsn", lab.dsn,
                        "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run_dir(tmp_path / "out")
    opened = {int(float(r["offered_rps"])): r for r in read_rows(run) if r["mode"] == "open"}
    assert set(opened) == {50, 100, 100000}
    assert opened[50]["overloaded"] == opened[100]["overloaded"] == "false"
    assert opened[100000]["overloaded"] == "true"
    assert float(opened[100000]["rps"]) < 0.95 * 100000
    with (run / "summary.csv").open(newline="") as fh:
        (summary,) = [r for r in csv.DictReader(fh) if r["mode"] == "open"]
    assert float(summary["sustainable_rps"]) == 100
    # k6 at 100,000 req/s may be the limit before the server is: then the rate is a lower bound.
    assert summary["sustainable_limit"] in ("server", "client"), summary
    assert summary["loadgen_cpu_cores"] != ""
    html = (run / "report.html").read_text()
    assert "Sustainable rate" in html and "p99 ≤ 250 ms" in html
