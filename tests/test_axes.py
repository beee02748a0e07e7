"""Sweeps the lab cannot give are refused before anything starts: one line, exit 2, no
Postgres and no target started (the real ``benchlab`` command; nothing else runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import run_benchlab


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--native", "--python", "3.99"], "Python 3.99 is not installed here (no python3.99 on PATH): install"),
        (["--native", "--python", "3.1x"], "command line: python: expected a list of Python versions"),
        (["--python", "3.11"], "sweeping python restarts the targets, which only a native lab can: add --native"),
        (["--workers", "1,2"], "sweeping workers restarts the targets, which only a native lab can: add --native"),
        (["--native", "--workers", f"1,{len(os.sched_getaffinity(0)) + 1}"], "of the targets' CPUs but they have"),
    ],
    ids=["not-installed", "not-a-version", "python-not-native", "workers-not-native", "more-workers-than-cpus"],
)
def test_a_sweep_the_lab_cannot_give_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run_benchlab("run", "--scenario", "smoke", "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no run was started


def test_python_given_by_variable_must_be_that_version(tmp_path: Path) -> None:
    """BENCHLAB_PYTHON_3_13 pointing at another interpreter is caught by asking it."""
    proc = run_benchlab("run", "--native", "--python", "3.13", "--scenario", "smoke", "--out", str(tmp_path),
                        env={"BENCHLAB_PYTHON_3_13": os.path.realpath("/usr/bin/python3")})  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "(default build), not 3.13: install Python 3.13" in proc.stderr
