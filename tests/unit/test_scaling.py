"""Scaling along a swept axis, from a recorded run (tests/fixtures/scale-w12: the issue's
``scale`` scenario, fastapi-uvicorn and flask-gunicorn-gevent at workers 1 and 2, json and db at
c=64, two repeats, on a 2-core machine other work shared). No lab starts."""

from __future__ import annotations

import re
import shutil
import statistics
from pathlib import Path

import pytest

from benchlab.analysis.analyse import analyse
from benchlab.analysis.run import load_run
from benchlab.model.level import Axes

SCALE = Path(__file__).parents[1] / "fixtures" / "scale-w12"
TARGETS = ["flask-gunicorn-gevent", "fastapi-uvicorn"]


def test_rows_record_workers_and_the_cpus_they_were_pinned_to() -> None:
    run = load_run(SCALE)
    assert run.varying_axes == ("workers",)
    for step in run.steps:
        assert step.ok and (step.axes.workers, step.axes.cpus) in {(1, "0"), (2, "0-1")}
    seen = {(s.target, s.test, s.axes.workers) for s in run.steps}
    assert seen == {(t, test, w) for t in TARGETS for test in ("json", "db") for w in (1, 2)}


def test_scaling_per_target_and_test_with_efficiency() -> None:
    analysis = analyse(load_run(SCALE))
    assert {(s.target, s.test) for s in analysis.scaling} == {(t, test) for t in TARGETS for test in ("json", "db")}
    for s in analysis.scaling:
        (one, two) = s.values
        assert (one.value, two.value) == (1, 2) and one.efficiency is None
        assert two.efficiency == pytest.approx(two.peak.rps / (2 * one.peak.rps))
        assert s.speedup == pytest.approx(two.peak.rps / one.peak.rps)
        assert one.peak.axes.workers == 1 and two.peak.axes.workers == 2


def test_the_decomposition_has_a_workers_step_per_target_and_test() -> None:
    analysis = analyse(load_run(SCALE))
    steps = [f for f in analysis.factors if f.kind == "workers"]
    assert {(f.base, f.other, f.test) for f in steps} == {
        (f"{t} w=1", f"{t} w=2", test) for t in TARGETS for test in ("json", "db")
    }
    scaled = {(s.target, s.test): s.speedup for s in analysis.scaling}
    for f in steps:
        assert f.estimate.ratio == pytest.approx(scaled[(f.base.split()[0], f.test)], rel=0.15)  # of geometric means


def test_targets_are_compared_at_the_sweeps_last_value() -> None:
    run = load_run(SCALE)
    assert all(run.reference_axes(t) == Axes(workers=2, cpus="0-1", python="3.11.7", python_build=None)
               for t in TARGETS)  # fmt: skip
    for lead in analyse(run).leads:
        assert lead.peak.axes.workers == 2


def test_the_report_has_a_scaling_chart_per_test_and_the_workers_step(tmp_path: Path) -> None:
    from benchlab.report.build import build_report

    run = shutil.copytree(SCALE, tmp_path / "run")
    html = build_report(run).read_text()
    assert {p.name for p in (run / "charts").glob("workers-*.png")} == {"workers-json.png", "workers-db.png"}
    assert 'id="chart-workers-json"' in html and "scaling efficiency" in html.lower()
    assert "fastapi-uvicorn w=1 → fastapi-uvicorn w=2" in html


PYTHONS = Path(__file__).parents[1] / "fixtures" / "python-311-313"  # the same two targets on 3.11 and 3.13


def test_a_python_sweep_is_the_same_analysis_along_another_axis() -> None:
    run = load_run(PYTHONS)
    assert run.varying_axes == ("python",)
    assert {s.axes.python for s in run.steps} == {"3.11.7", "3.13.0"}
    assert {s.axes.python_build for s in run.steps} == {"default"}
    analysis = analyse(run)
    steps = {(f.base, f.other) for f in analysis.factors if f.kind == "python"}
    assert steps == {(f"{t} py=3.11.7", f"{t} py=3.13.0") for t in TARGETS}
    assert all(v.efficiency is None for s in analysis.scaling for v in s.values)  # not a count of CPUs


def _claims(tmp_path: Path, checks: str) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text("claims:\n  - id: scales\n    text: FastAPI excels in scalability\n"
                    f"    baseline: {TARGETS[0]}\n    contenders: [{TARGETS[1]}]\n    checks:\n{checks}")  # fmt: skip
    return path


def test_a_claim_across_workers_compares_how_each_target_scales(tmp_path: Path) -> None:
    """``across: workers``: each target's peak at 2 workers over its own at 1, repeat by repeat,
    contender over baseline (the claim "FastAPI excels in scalability")."""
    from benchlab.analysis.claims import evaluate_claims
    from benchlab.config.claims import load_claims

    run = load_run(SCALE)
    claims = load_claims(_claims(tmp_path, "      - {test: json, across: workers, ratio: {above: 0.01}}\n"))
    (pairing,) = evaluate_claims(run, claims)
    (result,) = pairing.results
    speedups = {}
    for target in TARGETS:
        one, two = (run.peak(target, "json", "closed", a) for a in run.axes_of(target, "json"))
        assert one is not None and two is not None and (one.axes.workers, two.axes.workers) == (1, 2)
        speedups[target] = [b / a for a, b in zip(one.rps_samples, two.rps_samples, strict=True)]
    geo = [statistics.geometric_mean(v) for v in speedups.values()]
    assert result.estimate is not None and result.estimate.ratio == pytest.approx(geo[1] / geo[0])
    assert result.estimate.method == "pooled-log"  # each target's noise over the run: two repeats alone say little
    assert result.verdict == "holds" and "last workers value over the first" in result.check.describe()


def test_a_claim_across_an_axis_the_run_did_not_sweep_is_inconclusive(tmp_path: Path) -> None:
    from benchlab.analysis.claims import evaluate_claims
    from benchlab.config.claims import load_claims

    claims = load_claims(_claims(tmp_path, "      - {test: json, across: python, ratio: {above: 1.0}}\n"))
    (result,) = evaluate_claims(load_run(SCALE), claims)[0].results
    assert result.verdict == "inconclusive" and "json peaks at 1 python value(s), not 2 or more" in result.note


@pytest.mark.parametrize(("check", "message"), [
    ("{test: json, across: cores, ratio: {above: 1}}", "across: expected one of workers, python, got 'cores'"),
    ("{test: json, across: workers, level: {concurrency: 64}, ratio: {above: 1}}",
     "across: compares each target's peaks: leave out 'at' and 'level'"),
    ("{test: json, across: workers, relative_to: db, ratio: {above: 1}}",
     "across: give either 'relative_to' or 'across', not both"),
])  # fmt: skip
def test_bad_across_checks_name_the_key(tmp_path: Path, check: str, message: str) -> None:
    from benchlab.config.claims import load_claims
    from benchlab.errors import BenchlabError

    with pytest.raises(BenchlabError, match=re.escape(message)):
        load_claims(_claims(tmp_path, f"      - {check}\n"))
