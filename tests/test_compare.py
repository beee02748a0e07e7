"""``compare``: two real smoke runs, and pairs derived from a real run where the answer is known."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from derived_runs import JITTER, copy_run, edit_run_json, rewrite_rows, scaled, successful, with_repeats
from hypothesis import given
from hypothesis import strategies as st

from benchlab.comparison import CSV_COLUMNS, compare_runs
from benchlab.errors import BenchlabError
from benchlab.results import read_rows
from benchlab.stats import paired_log_ratio, welch_log_ratio


def measured_keys(run: Path) -> set[tuple[str, ...]]:
    return {
        (r["target"], r["test"], r["mode"], r["concurrency"], r["pipeline"], r["queries"], r["offered_rps"])
        for r in read_rows(run)
        if successful(r)
    }


@pytest.fixture
def repeated(smoke_run: Path, tmp_path: Path) -> Path:
    """The real smoke run with each step repeated three times (small deterministic noise)."""
    run = copy_run(smoke_run, tmp_path / "a")
    with_repeats(run, 3)
    return run


@pytest.fixture
def slower(repeated: Path, tmp_path: Path) -> Path:
    """B: the same run 30% slower with 40% higher latency, every step."""
    run = copy_run(repeated, tmp_path / "b")
    rewrite_rows(run, lambda row: [scaled(row, rps=0.7, latency=1.4)])
    return run


def test_two_real_runs(smoke_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = smoke_runs
    out = tmp_path / "compare.csv"
    result = compare_runs(a, b, fail_above=0.0, out_csv=out)
    both = measured_keys(a) & measured_keys(b)
    assert sum(r.present == "both" for r in result.table) == len(both) > 0
    # One repeat per step: nothing can be significant, so even a 0% threshold cannot fail the build.
    assert all(not r.rps.significant and not r.p99.significant for r in result.table)
    assert result.exit_code == 0
    text = result.render_text()
    assert result.run_a.run_id in text and result.run_b.run_id in text
    assert "~ (n=1 vs 1)" in text
    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert len(rows) == len(result.table)
    for row, cmp in zip(rows, result.table, strict=True):
        assert (row["target"], row["test"], row["present"]) == (cmp.target, cmp.test, cmp.present)


def test_known_slower_run_is_a_significant_regression(repeated: Path, slower: Path, tmp_path: Path) -> None:
    result = compare_runs(repeated, slower, fail_above=10, out_csv=tmp_path / "c.csv")
    assert result.table and all(r.present == "both" for r in result.table)
    for row in result.table:
        assert row.rps.pct == pytest.approx(-30, abs=0.5)
        assert row.rps.significant and row.rps.estimate and row.rps.estimate.p_value is not None
        assert row.rps.estimate.p_value < 0.01
        if row.p99.a:  # engines that give no p99 (0) cannot regress on it
            assert row.p99.pct == pytest.approx(40, abs=0.5) and row.p99.significant
    assert result.exit_code == 1
    assert len(result.regressions) == len(result.table)
    text = result.render_text()
    assert "FAIL: significant regressions beyond 10%" in text and "-30.0%" in text
    with (tmp_path / "c.csv").open(newline="") as fh:
        assert all(r["rps_significant"] == "true" and "rps -30.0%" in r["regression"] for r in csv.DictReader(fh))


def test_threshold_and_direction(repeated: Path, slower: Path) -> None:
    assert compare_runs(repeated, slower, fail_above=50).exit_code == 0  # -30% rps, +40% p99: under 50%
    assert compare_runs(repeated, slower, fail_above=None).exit_code == 0  # no threshold, no failure
    faster = compare_runs(slower, repeated, fail_above=10)  # B faster than A is not a regression
    assert faster.exit_code == 0 and all(r.rps.pct and r.rps.pct > 0 for r in faster.table)
    assert "OK: no significant regression beyond 10%" in faster.render_text()


def test_noise_is_not_significant(repeated: Path, tmp_path: Path) -> None:
    """B = A with its repeats in another order and 1% apart: no significant change, no failure."""
    b = copy_run(repeated, tmp_path / "b")
    rewrite_rows(b, lambda row: [{**scaled(row, rps=1.01), "repeat": str(4 - int(row["repeat"]))}])
    result = compare_runs(repeated, b, fail_above=0.5)
    assert all(not r.rps.significant for r in result.table)
    assert result.exit_code == 0


def test_setup_differences_are_listed(repeated: Path, slower: Path) -> None:
    def change(meta: dict) -> None:
        meta.setdefault("host", {})["cpu_model"] = "Other CPU 9000"
        meta.setdefault("engines", {})["wrk"] = "wrk 9.9"
        target = next(iter(meta.get("targets") or {"fastapi-uvicorn": {}}))
        meta.setdefault("targets", {}).setdefault(target, {}).setdefault("packages", {})["fastapi"] = "0.0.1"

    edit_run_json(slower, change)
    result = compare_runs(repeated, slower)
    keys = {k for k, _, _ in result.differences}
    assert {"host.cpu_model", "engines.wrk"} <= keys
    assert any(k.endswith(".packages.fastapi") for k in keys)
    text = result.render_text()
    assert "Setup differs" in text and "Other CPU 9000" in text
    assert compare_runs(repeated, repeated).differences == []


def test_steps_in_one_run_only(repeated: Path, tmp_path: Path) -> None:
    b = copy_run(repeated, tmp_path / "b")
    rewrite_rows(b, lambda row: [] if row["test"] == "json" else [row])
    result = compare_runs(repeated, b)
    only_a = [r for r in result.table if r.present == "only A"]
    assert only_a and all(r.test == "json" for r in only_a)
    assert "only A" in result.render_text()


def test_open_loop_rates_pair_by_rank(repeated: Path, tmp_path: Path) -> None:
    """Open-loop rates are fractions of each run's own peak, so A and B differ: matched by rank."""

    def open_loop(factor: float) -> Callable[[dict[str, str]], list[dict[str, str]]]:
        def change(row: dict[str, str]) -> list[dict[str, str]]:
            if row["mode"] == "open":
                return []
            if row["test"] != "json" or not successful(row):
                return [row]
            rate = round(float(row["rps"]) / JITTER[int(row["repeat"]) - 1] * factor)
            return [row, {**row, "mode": "open", "offered_rps": str(rate), "rps": str(rate * 0.99)}]

        return change

    b = copy_run(repeated, tmp_path / "b")
    rewrite_rows(repeated, open_loop(0.5))
    rewrite_rows(b, open_loop(0.55))
    result = compare_runs(repeated, b)
    opened = [r for r in result.table if r.mode == "open"]
    assert opened and all(r.present == "both" and r.offered_b for r in opened)
    assert "(B: " in result.render_text()


@pytest.mark.parametrize("which", ["a", "b"])
def test_bad_input(repeated: Path, tmp_path: Path, which: str) -> None:
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    args = (not_a_run, repeated) if which == "a" else (repeated, not_a_run)
    with pytest.raises(BenchlabError, match="is not a benchlab run"):
        compare_runs(*args)
    with pytest.raises(BenchlabError, match="fail-above"):
        compare_runs(repeated, repeated, fail_above=-5)


# ---------------------------------------------------------------- the statistics underneath

samples = st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=2, max_size=6)


@given(samples, samples, st.floats(min_value=0.01, max_value=100))
def test_welch_ratio_scales_and_brackets(a: list[float], b: list[float], k: float) -> None:
    est = welch_log_ratio(a, b)
    scaled_est = welch_log_ratio(a, [x * k for x in b])
    assert est.ratio is not None and scaled_est.ratio is not None
    assert math.isclose(scaled_est.ratio, est.ratio * k, rel_tol=1e-6)
    assert est.low is not None and est.high is not None
    assert est.low <= est.ratio * (1 + 1e-9) and est.ratio <= est.high * (1 + 1e-9)
    assert est.p_value is not None and 0 <= est.p_value <= 1


def test_too_few_samples_give_no_interval() -> None:
    one = welch_log_ratio([100.0], [200.0, 210.0])
    assert one.ratio is not None and not one.has_interval and one.p_value is None and not one.significant
    assert "needs >=2" in one.note
    pairs = paired_log_ratio([(1.0, 2.0), (1.0, 2.1)])
    assert not pairs.has_interval and "needs >=3" in pairs.note
    assert paired_log_ratio([(1.0, 2.0), (1.1, 2.1), (0.9, 1.9)]).has_interval
