"""The step sampler against a real server process tree under real wrk load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest
from helpers import Unavailable, serving

from benchlab.baseline import BaselineServer
from benchlab.engines.wrk import run_wrk, threads_for
from benchlab.ports import free_port
from benchlab.sampling import StepSampler, loadgen_cpu_seconds


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
    assert s.lost is None


def test_idle_step_uses_almost_no_cpu(baseline: BaselineServer) -> None:
    sampler = StepSampler(baseline.url, interval_s=0.2).start()
    before = loadgen_cpu_seconds()
    # An idle step of 1 s: over a few milliseconds the rate would be the cost of answering
    # /benchlab/info itself (about 9 ms of CPU with PSS), not what the server does.
    time.sleep(1)
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
    assert s.lost == "no answer from /benchlab/info"


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


# A worker as every target runs one: it answers /benchlab/info through target_kit for the tree
# of its master, named by BENCHLAB_MASTER_PID (here a separate process, so it can die alone).
WORKER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from benchlab.target_kit import Info
info = Info(1)
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps(info.payload()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("READY", flush=True)
server.serve_forever()
"""


@contextmanager
def worker_of(master: subprocess.Popen[bytes], port: int) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "BENCHLAB_MASTER_PID": str(master.pid)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(port)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def master() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "120"])


def test_worker_of_a_dead_master_is_a_lost_target_not_zeros() -> None:
    """uvicorn's orphaned workers keep answering for a master that is gone: the tree they report
    is empty, so the step says the sampler lost the target instead of recording 0 cores, 0 MB."""
    port, boss = free_port(), master()
    try:
        with worker_of(boss, port):
            sampler = StepSampler(f"http://127.0.0.1:{port}", interval_s=0.2).start()
            time.sleep(0.5)
            boss.kill()
            boss.wait()
            time.sleep(0.5)
            s = sampler.stop()
    finally:
        boss.kill()
        boss.wait()
    assert s.server_samples >= 3
    assert s.lost == f"target process {boss.pid} reported no processes"
    assert (s.server_cpu_cores, s.server_rss_mb, s.server_pss_mb) == (None, None, None)
    assert s.loadgen_cpu_cores is not None  # what was seen is still recorded


def test_target_restarted_mid_step_is_a_lost_target() -> None:
    """Another master answering on the same port is another process tree: no figure spans both."""
    port, first, second = free_port(), master(), master()
    try:
        with worker_of(first, port):
            sampler = StepSampler(f"http://127.0.0.1:{port}", interval_s=0.2).start()
            time.sleep(0.3)
        with worker_of(second, port):
            time.sleep(0.5)
            s = sampler.stop()
    finally:
        for boss in (first, second):
            boss.kill()
            boss.wait()
    assert s.lost == f"target_pid changed from {first.pid} to {second.pid}"
    assert (s.server_cpu_cores, s.server_rss_mb) == (None, None)
