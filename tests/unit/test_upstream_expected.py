"""scripts/upstream_expected.py: the queueing figure's bounds, and its table on a recorded
upstream-model run (tests/fixtures/upstream-model: every target at 1 and 256 connections,
20 ms waits, 2 workers, all roles sharing 2 CPUs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "upstream_expected.py"


def _script():
    spec = importlib.util.spec_from_file_location("upstream_expected", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_queueing_is_one_call_alone_and_stays_under_both_bounds() -> None:
    queueing = _script().queueing
    assert queueing(1, 0.001, 0.019) == pytest.approx(50.0)  # one wait: one call after another
    far = queueing(16, 0.0001, 0.2)  # a core barely used: the threads' model, 16 / 0.2001 s
    assert far == pytest.approx(16 / 0.2001, rel=0.01)
    near = queueing(16, 0.0012, 0.022)  # the knee: 16 waits need 0.85 of the core at the model's rate
    assert near < min(16 / 0.0232, 1 / 0.0012) * 0.95
    assert queueing(256, 0.0012, 0.022) == pytest.approx(1 / 0.0012, rel=0.001)  # saturated: the core's rate


def test_table_on_a_recorded_run_names_each_steps_limit() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(ROOT / "tests" / "fixtures" / "upstream-model")],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    limits = {}
    for line in out.splitlines()[1:]:
        cells = line.split()
        if cells[1] == "256":
            limits[cells[0]] = " ".join(cells[-2:]) if cells[-2] in ("server", "CPU") else cells[-1]
    assert len(limits) == 12
    assert limits["flask-granian"] == "model"
    assert limits["flask-gunicorn-gthread"] == "CPU queueing"  # 0.91 of its queueing figure
    holds_a_wait_per_connection = [t for t in limits if t not in ("flask-granian", "flask-gunicorn-gthread")]
    assert all(limits[t] == "server CPU" for t in holds_a_wait_per_connection), limits
