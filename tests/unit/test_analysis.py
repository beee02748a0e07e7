"""The analysis of a run, from recorded CSV fixtures: no lab, no engines, well under a second.

tests/fixtures/smoke-v1 is a real smoke run recorded before results.csv had a format stamp,
with the summary.csv the report of that time wrote: today's analysis must give the same rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

from benchlab.analysis.analyse import analyse
from benchlab.analysis.run import load_run

FIXTURES = Path(__file__).parents[1] / "fixtures"
OLD = FIXTURES / "smoke-v1"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def test_an_old_run_gives_the_summary_it_gave_then() -> None:
    run = load_run(OLD)
    with (OLD / "summary.csv").open(newline="") as fh:
        recorded = list(csv.DictReader(fh))
    then = list(recorded[0])
    now = [{c: _text(row[c]) for c in then} for row in analyse(run).summary]
    assert now == recorded


def test_an_old_run_has_no_swept_axes_and_one_lead_per_test() -> None:
    run = load_run(OLD)
    assert run.varying_axes == ()
    analysis = analyse(run)
    assert [lead.test for lead in analysis.leads] == run.tests
    assert analysis.scaling == [] and all(f.kind != "workers" for f in analysis.factors)
    assert all(p.label_in(run) == p.level.label for p in run.points)
