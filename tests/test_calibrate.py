"""The baseline server speaks HTTP/1.1 correctly, and calibration measures it with real wrk."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchlab.baseline import BaselineServer
from benchlab.calibrate import format_calibration, headroom, run_calibration


@pytest.fixture(scope="module")
def two_workers() -> Iterator[BaselineServer]:
    with BaselineServer(workers=2) as server:
        yield server


def _read_responses(sock: socket.socket, count: int) -> bytes:
    data = b""
    sock.settimeout(5)
    while data.count(b"Hello, World!") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_pipelined_and_split_requests_each_get_one_answer(two_workers: BaselineServer) -> None:
    req = f"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:{two_workers.port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", two_workers.port)) as sock:
        sock.sendall(req * 16)  # one write, 16 requests (TFB's plaintext depth)
        assert _read_responses(sock, 16).count(b"HTTP/1.1 200 OK") == 16
        sock.sendall(req[:10])  # a request cut mid-way waits for its end
        time.sleep(0.1)
        sock.sendall(req[10:] + req[:-2])
        time.sleep(0.1)
        sock.sendall(req[-2:])
        assert _read_responses(sock, 2).count(b"HTTP/1.1 200 OK") == 2


def test_answers_like_a_target(two_workers: BaselineServer) -> None:
    r1 = httpx.get(two_workers.url + "/plaintext")
    assert r1.status_code == 200 and r1.text == "Hello, World!"
    assert {"server", "date", "content-type", "content-length"} <= set(r1.headers)
    info = httpx.get(two_workers.url + "/benchlab/info").json()
    assert info["workers"] == 2 and info["cpu_seconds"] >= 0 and info["rss_mb"] > 0
    assert info["cpus"] == sorted(os.sched_getaffinity(0))
    # Date moves on: each worker refreshes its own every second, so two workers' Dates can agree
    # for up to a second past a change (and a busy machine delays the refresh); allow a few.
    deadline = time.monotonic() + 5
    while httpx.get(two_workers.url + "/json").headers["date"] == r1.headers["date"]:
        assert time.monotonic() < deadline, "the Date header did not change in 5 s"
        time.sleep(0.2)


def test_workers_pinned_to_given_cpus() -> None:
    with BaselineServer(workers=1, cpus=[0]) as server:
        assert httpx.get(server.url + "/benchlab/info").json()["cpus"] == [0]


def test_calibration_measures_both_loads_and_headroom(tmp_path: Path) -> None:
    targets = {"a json": 1000.0, "b json": 2000.0, "b plaintext": 5000.0}
    result = run_calibration(targets, duration_s=1, connections=16, pipelined_connections=32, raw_dir=tmp_path)
    json_like, piped = result["baseline"]["json"], result["baseline"]["plaintext"]
    assert (json_like["connections"], json_like["pipeline"]) == (16, 1)
    assert (piped["connections"], piped["pipeline"]) == (32, 16)
    assert json_like["rps"] > 1000 and piped["rps"] > json_like["rps"]
    assert json_like["errors"] == piped["errors"] == 0
    assert json_like["loadgen_cpu_cores"] > 0 and json_like["server_cpu_cores"] > 0
    assert result["headroom"]["json"]["fastest"] == "b json"
    assert result["headroom"]["json"]["ratio"] == pytest.approx(json_like["rps"] / 2000.0)
    assert result["headroom"]["plaintext"]["ratio"] == pytest.approx(piped["rps"] / 5000.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrate-json.txt", "calibrate-plaintext.txt"]
    text = format_calibration(result)
    assert "json-like" in text and "plaintext-like" in text and "headroom json" in text


def test_headroom_flags_a_tight_client() -> None:
    base = {"json": {"rps": 150.0}, "plaintext": {"rps": 1000.0}}
    h = headroom(base, {"x json": 100.0, "y json": 0.0})
    assert h == {"json": {"fastest": "x json", "rps": 100.0, "ratio": 1.5}}
    result = {"engine": "wrk", "cpus": "0", "cpu_count": 1, "workers": 1, "targets_rps": {"x json": 100.0},
              "headroom": h, "baseline": {"json": {"connections": 1, "pipeline": 1, "rps": 150.0, "errors": 0,
                                                   "loadgen_cpu_cores": 0.2, "server_cpu_cores": 0.1}}}  # fmt: skip
    text = format_calibration(result)
    assert "tight" in text
    assert "used 0.30 of 1 CPUs" in text  # a busy machine is said, not hidden
