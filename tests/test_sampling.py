"""The step sampler against a real server process tree under real wrk load."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import psutil
import pytest
from test_wrk import Unavailable, serving

from benchlab.baseline import BaselineServer
from benchlab.sampling import StepSampler, loadgen_cpu_seconds
from benchlab.wrk import run_wrk, threads_for


@pytest.fixture(scope="module")
def baseline() -> Iterator[BaselineServer]:
    with BaselineServer(workers=1) as server:
        yield server


def _tree(server: BaselineServer) -> list[psutil.Process]:
    assert server.proc is not None
    root = psutil.Process(server.proc.pid)
    return [root, *root.children(recursive=True)]


def test_samples_server_db_and_loadgen_under_load(baseline: BaselineServer) -> None:
    # The baseline's own processes stand in for "the database": any visible process set works.
    with StepSampler(baseline.url, db_processes=lambda: _tree(baseline)) as sampler:
        m = run_wrk(baseline.url + "/json", connections=32, duration_s=2, threads=threads_for(32))
    s = sampler.result
    assert s is not None and m.requests > 0
    cpus = len(os.sched_getaffinity(0))
    assert s.server_samples >= 3  # start, during (every 0.5 s), stop
    assert s.server_cpu_cores is not None and 0.05 < s.server_cpu_cores <= cpus + 0.2
    assert s.server_rss_mb is not None and s.server_rss_mb > 5
    # Same processes seen two ways (HTTP /benchlab/info and psutil): the same CPU rate.
    assert s.db_cpu_cores == pytest.approx(s.server_cpu_cores, rel=0.3, abs=0.1)
    # wrk ran and exited inside the window; its CPU still counts (reaped-children time).
    assert s.loadgen_cpu_cores is not None and 0.05 < s.loadgen_cpu_cores <= cpus + 0.2
    assert s.loadgen_cpus == cpus
    assert s.client_bound == (s.loadgen_cpu_cores >= 0.9 * cpus)


def test_idle_step_uses_almost_no_cpu(baseline: BaselineServer) -> None:
    sampler = StepSampler(baseline.url, interval_s=0.2).start()
    before = loadgen_cpu_seconds()
    s = sampler.stop()
    assert loadgen_cpu_seconds() >= before
    assert s.server_cpu_cores is not None and s.server_cpu_cores < 0.5
    assert s.db_cpu_cores is None  # no database process lister given
    assert s.client_bound is False


def test_client_bound_threshold_follows_given_cpus(baseline: BaselineServer) -> None:
    with StepSampler(baseline.url, loadgen_cpus=1) as sampler:
        run_wrk(baseline.url + "/json", connections=16, duration_s=1, threads=1)
    s = sampler.result
    assert s is not None and s.loadgen_cpus == 1
    assert s.client_bound == (s.loadgen_cpu_cores is not None and s.loadgen_cpu_cores >= 0.9)


def test_no_info_endpoint_gives_none_not_errors() -> None:
    with serving(Unavailable) as url, StepSampler(url, db_processes=lambda: []) as sampler:
        pass
    s = sampler.result
    assert s is not None
    assert (s.server_cpu_cores, s.server_rss_mb, s.db_cpu_cores, s.server_samples) == (None, None, None, 0)


def test_unreachable_server_and_failing_lister_give_none() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    def broken() -> list[psutil.Process]:
        raise RuntimeError("cannot list")

    with StepSampler(f"http://127.0.0.1:{port}", db_processes=broken, request_timeout_s=0.2) as sampler:
        pass
    s = sampler.result
    assert s is not None and s.server_cpu_cores is None and s.db_cpu_cores is None
    assert s.loadgen_cpu_cores is not None  # our own side is always visible
