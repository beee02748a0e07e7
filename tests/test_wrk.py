"""wrk runs for real against the baseline server on loopback; its own output is parsed."""

from __future__ import annotations

import json
import os
import resource
import socket
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import Slow, Unavailable, serving

from benchlab.baseline import BaselineServer
from benchlab.engines.wrk import find_wrk, parse_wrk_output, run_wrk, threads_for
from benchlab.errors import BenchlabError
from benchlab.measurement import LATENCY_KEYS
from benchlab.model.codec import encode
from benchlab.model.level import Level
from benchlab.model.modes import LoadMode
from benchlab.model.status import StepStatus
from benchlab.model.step import Step


def _ordered(latency: dict[str, float]) -> bool:
    chain = [latency[k] for k in ("p50", "p75", "p90", "p99", "p999", "p9999", "max")]
    return all(a <= b for a, b in pairwise(chain))


def test_closed_loop_counts_and_latency(baseline: BaselineServer, tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "json.txt"
    m = run_wrk(baseline.url + "/json", connections=16, duration_s=1, threads=threads_for(16), raw_path=raw)
    assert m.requests > 1000
    assert 0.9 < m.duration_s < 2.0  # measured by wrk, not the nominal second
    assert m.rps == pytest.approx(m.requests / m.duration_s)
    assert m.bytes > m.requests * 100  # every response is ~140 bytes with headers
    assert (m.errors_connect, m.errors_read, m.errors_write, m.errors_timeout, m.errors_status) == (0, 0, 0, 0, 0)
    assert set(m.latency_ms) == set(LATENCY_KEYS)
    assert _ordered(m.latency_ms) and m.latency_ms["mean"] > 0 and m.latency_ms["stdev"] >= 0
    text = raw.read_text()
    assert text.startswith("$ ") and "-c 16" in text and "report.lua" in text
    summary = json.loads(next(line for line in text.splitlines() if line.startswith('{"benchlab"')))
    assert summary["requests"] == m.requests  # the raw file is the figure's source
    row = encode(_step().measured(m))
    assert row["requests"] == str(m.requests) and float(row["rps"]) == pytest.approx(m.rps, abs=1e-4)


def test_pipelining_sends_depth_requests_per_write(baseline: BaselineServer, tmp_path: Path) -> None:
    plain = run_wrk(baseline.url + "/plaintext", connections=16, duration_s=1, threads=threads_for(16))
    raw = tmp_path / "p.txt"
    piped = run_wrk(baseline.url + "/plaintext", connections=16, duration_s=1, threads=threads_for(16),
                    pipeline=16, raw_path=raw)  # fmt: skip
    assert "pipeline.lua" in raw.read_text() and "-- 16" in raw.read_text()
    assert piped.errors_status == piped.socket_errors == 0
    # 16 requests per round trip instead of 1: many times the throughput on the same connections.
    assert piped.rps > 2 * plain.rps
    # wrk's pipelined latency is per batch and mis-corrected (wg/wrk#236): only max is kept
    assert piped.latency_ms["max"] > 0
    assert all(piped.latency_ms[k] is None for k in ("mean", "stdev", "p50", "p99", "p9999"))


def test_non_2xx_responses_are_status_errors() -> None:
    with serving(Unavailable) as url:
        m = run_wrk(url + "/db", connections=4, duration_s=1, threads=1)
    assert m.requests > 0
    assert m.errors_status == m.requests


def test_responses_later_than_the_timeout_are_timeouts() -> None:
    """wrk's timeout counts responses that arrive after --timeout (they get no latency);
    requests still unanswered when the run ends are not counted at all (wrk's rule)."""
    with serving(Slow) as url:
        m = run_wrk(url + "/json", connections=4, duration_s=2, threads=1, timeout_s=1)
    assert m.errors_timeout >= 4
    assert m.latency_ms["max"] == 0  # none arrived within the timeout


def test_refused_connection_is_a_clear_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(BenchlabError, match=r"wrk failed.*refused"):
        run_wrk(f"http://127.0.0.1:{port}/json", connections=2, duration_s=1, threads=1)


def test_connections_above_open_file_limit_rejected() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with pytest.raises(BenchlabError, match=r"open-file limit is \d+.*ulimit -n"):
        run_wrk("http://127.0.0.1:9/json", connections=hard + 1, duration_s=1, threads=1)


def test_missing_wrk_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BenchlabError, match="apt-get install wrk"):
        find_wrk()


def test_threads_follow_client_cpus() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert threads_for(1) == 1
    assert threads_for(512) == cpus


def test_zero_percentiles_from_wrk_bug_are_left_out():
    """wrk can answer 0 for high percentiles (wg/wrk#236): recorded as missing, not as 0 ms."""
    line = ('{"benchlab":"wrk","requests":7457,"bytes":984324,"duration_us":2162982,'
            '"errors":{"connect":0,"read":0,"write":0,"timeout":0,"status":0},'
            '"latency_us":{"mean":84677,"stdev":66401,"max":292423,'
            '"percentiles":{"50":71335,"75":138973,"90":243738,"99":0,"99.9":0,"99.99":0}}}')  # fmt: skip
    m = parse_wrk_output("Running 2s test\n" + line + "\n")
    assert m.latency_ms["p90"] == 243.738
    assert m.latency_ms["p99"] is None and m.latency_ms["p9999"] is None
    assert _step().measured(m).latency["latency_p99_ms"] is None


def _step() -> Step:
    """A planned closed-loop step, to fold a measurement into as the runner does."""
    return Step(target="t", test="json", mode=LoadMode.CLOSED, level=Level(16, 1), repeat=1,
                status=StepStatus.parse("pass"))
