"""results.csv read and written through the one codec, from a run recorded before the format
stamp (tests/fixtures/smoke-v1: a real smoke run of the three core targets). No lab starts."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from benchlab.model.codec import COLUMNS, CSV_NAME, FORMAT_VERSION, ResultsWriter, decode, encode, read_rows, read_steps
from benchlab.model.level import Axes, Level
from benchlab.model.modes import LoadMode
from benchlab.model.status import Status, StepStatus
from benchlab.model.step import Step

FIXTURES = Path(__file__).parents[1] / "fixtures"
OLD = FIXTURES / "smoke-v1"


def test_a_run_without_the_stamp_reads_as_format_1() -> None:
    steps = read_steps(OLD)
    assert len(steps) == 21 and all(s.ok for s in steps)
    first = steps[0]
    assert first.mode is LoadMode.CLOSED and first.level == Level(concurrency=32, pipeline=1)
    assert first.axes == Axes(workers=2)  # the workers column was there; cpus and python were not
    assert {s.test for s in steps} == {"json", "plaintext", "db", "queries", "fortunes", "updates", "cached-queries"}


def test_every_old_row_survives_a_round_trip_cell_for_cell() -> None:
    rows = read_rows(OLD)
    for n, row in enumerate(rows, start=2):
        again = encode(decode(row, n))
        assert {c: again[c] for c in COLUMNS if row[c]} == {c: row[c] for c in COLUMNS if row[c]}
        assert again["format"] == str(FORMAT_VERSION)


def test_the_writer_stamps_each_row_and_upgrades_an_old_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD, run)
    new = Step(target="fastapi-uvicorn", test="json", mode=LoadMode.OPEN, level=Level(64, 1, None, 500.0),
               repeat=2, status=StepStatus(Status.SKIPPED, "no peak"), axes=Axes(workers=1, cpus="0", python="3.11.7"))
    with ResultsWriter(run) as writer:
        writer.write(new)
    with (run / CSV_NAME).open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    assert [r["format"] for r in rows] == ["1"] * 21 + [str(FORMAT_VERSION)]
    back = read_steps(run)
    assert back[:21] == read_steps(OLD)
    assert back[-1] == new


def test_compare_reads_a_run_written_before_the_stamp_against_one_written_after(tmp_path: Path) -> None:
    from benchlab.comparison import compare_runs

    new = tmp_path / "new"
    shutil.copytree(OLD, new)
    with ResultsWriter(new):  # rewrites the CSV in today's format, rows unchanged
        pass
    assert read_rows(new)[0]["format"] == "1" and "python" in read_rows(new)[0]
    result = compare_runs(OLD, new, None, tmp_path / "compare.csv")
    assert {r.present for r in result.table} == {"both"} and len(result.table) == 21
    assert all(r.rps.pct == 0 for r in result.table)


def test_upstream_and_profiler_columns_round_trip_and_a_profiled_step_never_counts(tmp_path: Path) -> None:
    from benchlab.analysis.run import load_run

    run = tmp_path / "run"
    shutil.copytree(OLD, run)
    old = read_steps(OLD)
    assert all(s.upstream_bound is None and s.profiler_overhead is None for s in old)  # not there: empty
    assert all(s.resources["upstream_cpu_cores"] is None for s in old)
    peak = max((s for s in old if s.target == "fastapi-uvicorn" and s.test == "json"), key=lambda s: s.rps or 0)
    profiled = replace(peak, mode=LoadMode.PROFILED, rps=(peak.rps or 0) * 10, profiler_overhead=-9.0,
                       step_id=peak.step_id.replace("/closed/", "/profiled/"))  # fmt: skip
    waited = replace(old[0], upstream_bound=True, resources={**old[0].resources, "upstream_cpu_cores": 0.75})
    with ResultsWriter(run) as writer:
        writer.write(profiled)
        writer.write(waited)
    back = read_steps(run)
    assert back[-2:] == [profiled, waited]
    assert back[-1].flags == ("upstream-bound",) and not profiled.counted and waited.counted
    loaded = load_run(run)
    assert loaded.profiled == (profiled,) and profiled not in loaded.steps
    top = loaded.peak("fastapi-uvicorn", "json", LoadMode.CLOSED)
    assert top is not None and top.rps == peak.rps  # ten times the throughput, and still not the peak


def test_a_second_reader_is_not_warned_again_of_a_torn_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD, run)
    with (run / CSV_NAME).open("a") as fh:
        fh.write("run,fastapi-uvicorn,half a row")
    assert len(read_steps(run, warn=False)) == 21
    assert capsys.readouterr().err == ""
    assert len(read_rows(run)) == 21
    assert "cut off mid-write" in capsys.readouterr().err
