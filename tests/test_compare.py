"""``compare``: two real smoke runs, and pairs derived from a real run where the answer is known."""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from derived_runs import JITTER, copy_run, edit_run_json, rewrite_rows, scaled, successful, with_noise, with_repeats
from helpers import run_benchlab
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from benchlab.analysis.stats import bh_adjust, paired_log_ratio, pooled_log_ratio, pooled_spread, welch_log_ratio
from benchlab.comparison import COMPARE_CSV, CSV_COLUMNS, compare_runs
from benchlab.errors import BenchlabError
from benchlab.model.codec import read_rows

# Two pure-noise runs (40 levels, 80 tests) where chance puts raw p < 0.05 on seven tests, three of
# them regressions beyond 2 %: the second of the first few seed pairs tried (most give a few such).
NOISE_SEEDS = ("a1", "b1")
SLOWED = 3  # levels c=1..3 get the real slowdown


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


@pytest.fixture
def noise(smoke_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two runs of the same code from the real smoke run's figures: 40 levels, four repeats of 3 % noise."""
    runs = []
    for seed in NOISE_SEEDS:
        run = copy_run(smoke_run, tmp_path / seed)
        with_noise(run, seed)
        runs.append(run)
    return runs[0], runs[1]


def compare_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def made_tests(rows: list[dict[str, str]]) -> list[tuple[str, str, float, float, float]]:
    """``(row, metric, change %, p, q)`` of every test the comparison made."""
    return [
        (f"{r['target']} {r['test']}", m, float(r[f"{m}_change_pct"]), float(r[f"{m}_p"]), float(r[f"{m}_q"]))
        for r in rows
        for m in ("rps", "p99")
        if r[f"{m}_p"]
    ]


def is_regression(metric: str, change_pct: float, threshold: float) -> bool:
    return change_pct < -threshold if metric == "rps" else change_pct > threshold


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
    assert "no significance tests: fewer than two repeats a side" in text
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


def test_cli_writes_compare_csv_into_run_b(repeated: Path, slower: Path, tmp_path: Path) -> None:
    """Through the command: the table goes to RUN_B/compare.csv, with q columns, unless --csv says otherwise."""
    elsewhere = tmp_path / "elsewhere.csv"
    proc = run_benchlab("compare", str(repeated), str(slower), "--csv", str(elsewhere))
    assert proc.returncode == 0, proc.stderr
    assert elsewhere.is_file() and not (slower / COMPARE_CSV).exists()
    assert proc.stdout.rstrip().endswith(f"wrote {elsewhere}")
    proc = run_benchlab("compare", str(repeated), str(slower))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"wrote {slower / COMPARE_CSV}")
    assert "significant = Benjamini-Hochberg adjusted q < 0.05" in proc.stdout and "(FDR 5 %)" in proc.stdout
    rows = compare_csv(slower / COMPARE_CSV)
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    assert all(float(r["rps_q"]) < 0.01 and r["rps_significant"] == "true" for r in rows)
    assert all(float(r["rps_q"]) >= float(r["rps_p"]) for r in rows)


def test_cli_bad_input_is_one_line(repeated: Path, tmp_path: Path) -> None:
    for args in (
        (str(tmp_path), str(repeated)),
        (str(repeated), str(repeated), "--csv", str(tmp_path / "missing" / "c.csv")),
    ):
        proc = run_benchlab("compare", *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("benchlab: ") and proc.stderr.count("\n") == 1


def test_pure_noise_is_not_significant_after_adjustment(noise: tuple[Path, Path]) -> None:
    """Dozens of tests between two runs of the same code: some raw p fall below 0.05 by chance,
    Benjamini-Hochberg calls none of them significant, so --fail-above does not fail on them."""
    a, b = noise
    proc = run_benchlab("compare", str(a), str(b), "--fail-above", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: no significant regression beyond 2%" in proc.stdout
    rows = compare_csv(b / COMPARE_CSV)
    made = made_tests(rows)
    assert len(made) == 80
    chance = [t for t in made if t[3] < 0.05]
    assert len(chance) >= 2, "precondition: raw p < 0.05 somewhere"
    # Unadjusted, --fail-above 2 would fail the build on these.
    assert any(is_regression(m, pct, 2) for _, m, pct, _, _ in chance)
    assert all(r["rps_significant"] == r["p99_significant"] == "false" and not r["regression"] for r in rows)
    # q is BH over every test of the comparison, rps and p99 together, and never below p.
    expected = sps.false_discovery_control([p for *_, p, _ in made])
    assert [q for *_, q in made] == pytest.approx(expected.tolist(), rel=1e-3)
    assert all(q >= p for *_, p, q in made)
    assert f"over all {len(made)} tests (FDR 5 %)" in proc.stdout and "Benjamini-Hochberg" in proc.stdout
    shown = [line for line in proc.stdout.splitlines() if "(p=0.0" in line]
    assert shown and all("~ " in line for line in shown)  # raw p < 0.05 yet marked not significant


def test_real_slowdown_stays_significant_among_noise(noise: tuple[Path, Path]) -> None:
    """The same noise plus a real 30 % slowdown of a few levels: they survive the adjustment,
    the noise still does not, and --fail-above fails on exactly the slowed rows."""
    a, b = noise
    rewrite_rows(b, lambda row: [scaled(row, rps=0.7, latency=1.4) if int(row["concurrency"]) <= SLOWED else row])
    proc = run_benchlab("compare", str(a), str(b), "--fail-above", "10")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL: significant regressions beyond 10%" in proc.stdout
    rows = compare_csv(b / COMPARE_CSV)
    slowed = [r for r in rows if int(r["concurrency"]) <= SLOWED]
    assert len(slowed) == SLOWED and all(r["present"] == "both" for r in rows)
    for r in slowed:
        # -30 % and +40 %, give or take the noise of medians of four repeats (a few %).
        assert float(r["rps_change_pct"]) == pytest.approx(-30, abs=7)
        assert float(r["p99_change_pct"]) == pytest.approx(40, abs=10)
        assert float(r["rps_q"]) < 0.01 and r["rps_significant"] == "true" and "rps -" in r["regression"]
        assert float(r["p99_q"]) < 0.01 and r["p99_significant"] == "true" and "p99 +" in r["regression"]
    others = [r for r in rows if int(r["concurrency"]) > SLOWED]
    assert all(r["rps_significant"] == r["p99_significant"] == "false" and not r["regression"] for r in others)
    failed = [line for line in proc.stdout.split("FAIL:", 1)[1].splitlines()[1:] if line.startswith("  ")]
    assert sorted(int(m) for line in failed for m in re.findall(r" c=(\d+)", line)) == list(range(1, SLOWED + 1))


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


@given(samples, samples)
def test_pooled_ratio_on_its_own_samples_is_welch(a: list[float], b: list[float]) -> None:
    """Each side's spread pooled from its own repeats alone: exactly scipy's Welch interval."""
    pooled = pooled_log_ratio(a, b, pooled_spread([a]), pooled_spread([b]))
    welch = welch_log_ratio(a, b)
    assert welch.ratio is not None and pooled.ratio == pytest.approx(welch.ratio)
    if welch.low != welch.high:  # not the exact, zero-variance case
        assert pooled.low == pytest.approx(welch.low, rel=1e-6) and pooled.high == pytest.approx(welch.high, rel=1e-6)
        assert pooled.p_value == pytest.approx(welch.p_value, rel=1e-6, abs=1e-12)


def test_pooled_spread_narrows_two_repeat_intervals() -> None:
    """Two repeats a side, 10 % apart: Welch's t has ~2 degrees of freedom; the same noise
    seen at 12 more points of each target gives an interval about half as wide."""
    a, b = [1000.0, 1100.0], [1500.0, 1650.0]
    welch = welch_log_ratio(a, b)
    others = [[v, v * 1.1] for v in (200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)] * 2
    spread = pooled_spread([a, *others])
    assert spread is not None and spread.df == 13
    assert spread.variance == pytest.approx(math.log(1.1) ** 2 / 2)
    pooled = pooled_log_ratio(a, b, spread, spread)
    assert pooled.ratio == pytest.approx(1.5) and pooled.low is not None and pooled.high is not None
    assert welch.low is not None and welch.high is not None
    assert pooled.low < 1.5 < pooled.high and pooled.significant
    assert math.log(pooled.high / pooled.low) < math.log(welch.high / welch.low) / 2
    assert pooled_spread([[5.0], [7.0]]) is None  # no group has two repeats
    assert pooled_log_ratio([1.0, 1.1], [2.0, 2.2], None, spread) == welch_log_ratio([1.0, 1.1], [2.0, 2.2])


def test_too_few_samples_give_no_interval() -> None:
    one = welch_log_ratio([100.0], [200.0, 210.0])
    assert one.ratio is not None and not one.has_interval and one.p_value is None and not one.significant
    assert "needs >=2" in one.note
    pairs = paired_log_ratio([(1.0, 2.0), (1.0, 2.1)])
    assert not pairs.has_interval and "needs >=3" in pairs.note
    assert paired_log_ratio([(1.0, 2.0), (1.1, 2.1), (0.9, 1.9)]).has_interval


def test_zero_variance_is_exact_without_warnings() -> None:
    """Identical repeats (a quantised latency): no NaN, no scipy warning; an exact ratio."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = welch_log_ratio([5.0, 5.0, 5.0], [5.0, 5.0])
        moved = welch_log_ratio([5.0, 5.0, 5.0], [6.0, 6.0, 6.0])
        one_side = welch_log_ratio([5.0, 5.0, 5.0], [6.0, 6.1, 5.9])
        paired = paired_log_ratio([(1.0, 2.0), (2.0, 4.0), (4.0, 8.0)])
    assert (same.ratio, same.low, same.high, same.p_value) == (1.0, 1.0, 1.0, 1.0)
    assert moved.ratio == pytest.approx(1.2) and moved.low == moved.high == moved.ratio and moved.p_value == 0.0
    assert one_side.p_value is not None and 0 < one_side.p_value < 0.01 and one_side.low < 1.2 < one_side.high
    assert paired.ratio == pytest.approx(2.0) and paired.p_value is not None and paired.p_value < 0.001


def test_bh_adjust_skips_rows_without_a_test() -> None:
    assert bh_adjust([]) == [] and bh_adjust([None, None]) == [None, None]
    q = bh_adjust([0.01, None, 0.04, 0.03, None])
    assert q[1] is None and q[4] is None
    assert [q[0], q[2], q[3]] == pytest.approx(sps.false_discovery_control([0.01, 0.04, 0.03]).tolist())
