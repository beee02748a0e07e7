"""Without the database: quick 503s with a short JSON error, and recovery without a restart.

Also at start-up: a target whose database is not there waits a bounded time, says what it waits
for, and exits non-zero with one clear line instead of crash-looping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from benchlab.harness import NativeLab, repo_root
from benchlab.postgres import free_port
from benchlab.targets import Target, load_targets
from benchlab.venvs import service_python

DOWN_ANSWER_S = 3.0  # bounded 503 while the database is down
RECOVER_S = 30.0
START_WAIT_S = 3  # BENCHLAB_DB_WAIT_S for the start-up test
EXIT_BOUND_S = START_WAIT_S + 12  # the wait plus interpreter and server start-up
DB_PATHS = ("/db", "/queries?queries=3", "/fortunes", "/updates?queries=2")
BURST = 64  # new connections at once: enough that every worker of a target gets some


def _timed_get(url: str) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    resp = httpx.get(url, timeout=DOWN_ANSWER_S + 5)
    return time.monotonic() - started, resp


def _assert_quick_503s(lab: NativeLab) -> None:
    for rt in lab.running.values():
        url = rt.target.url
        for path in DB_PATHS:
            elapsed, resp = _timed_get(url + path)
            assert resp.status_code == 503, f"{rt.target.name} {path}: {resp.status_code} {resp.text[:100]}"
            assert elapsed < DOWN_ANSWER_S, f"{rt.target.name} {path}: 503 after {elapsed:.1f} s"
            assert resp.json() == {"error": "database unavailable"}
            assert len(resp.content) < 100
        assert httpx.get(url + "/json", timeout=5).status_code == 200, f"{rt.target.name} /json"


def _burst_statuses(url: str) -> list[int]:
    """Each DB path BURST/len(DB_PATHS) times, 16 new connections at once (spread over the workers)."""
    paths = [DB_PATHS[i % len(DB_PATHS)] for i in range(BURST)]
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda p: httpx.get(url + p, timeout=10).status_code, paths))


def _assert_recovers(lab: NativeLab) -> None:
    for rt in lab.running.values():
        deadline = time.monotonic() + RECOVER_S
        statuses: list[int] = []
        while time.monotonic() < deadline:
            statuses = [httpx.get(rt.target.url + p, timeout=10).status_code for p in DB_PATHS]
            if statuses == [200] * len(DB_PATHS):
                break
            time.sleep(0.1)  # a pool may still be waiting out its reconnect back-off
        assert statuses == [200] * len(DB_PATHS), f"{rt.target.name} did not recover: {statuses}"
        # Recovered means every worker, not just the one that answered: none keeps a dead connection.
        burst = _burst_statuses(rt.target.url)
        assert burst == [200] * BURST, f"{rt.target.name} after recovery: {sorted(set(burst))}"


def test_database_down_gives_quick_503_then_recovers(lab: NativeLab) -> None:
    assert lab.postgres is not None
    lab.postgres.down()
    try:
        _assert_quick_503s(lab)
    finally:
        lab.postgres.up()
    _assert_recovers(lab)


def test_database_restart_between_requests_costs_no_request(lab: NativeLab) -> None:
    """A database restarted while the lab is idle (compose restarting it, say) leaves every
    pooled connection dead; the next requests must still all succeed, on every worker."""
    assert lab.postgres is not None
    for rt in lab.running.values():  # every pool holds idle connections
        assert _burst_statuses(rt.target.url) == [200] * BURST
    lab.postgres.down()
    lab.postgres.up()
    for rt in lab.running.values():
        burst = _burst_statuses(rt.target.url)
        assert burst == [200] * BURST, f"{rt.target.name} after a restart: {burst}"


def _start_without_database(target: Target) -> subprocess.Popen[str]:
    """The registry command, as the harness runs it, pointed at a port where nothing listens."""
    service_dir = repo_root() / "services" / target.service
    python = service_python(service_dir)
    env = dict(
        os.environ,
        DATABASE_URL=f"postgresql://benchmarkdbuser:benchmarkdbpass@127.0.0.1:{free_port()}/hello_world",
        BENCHLAB_DB_WAIT_S=str(START_WAIT_S),
        BENCHLAB_PORT=str(free_port()),
        BENCHLAB_HOST="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
    argv = [python if part == "python" else part for part in target.command]
    return subprocess.Popen(
        argv, cwd=service_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def test_start_waits_for_database_then_gives_up() -> None:
    targets = load_targets()
    started = time.monotonic()
    procs = {t.name: _start_without_database(t) for t in targets}
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=max(1.0, started + EXIT_BOUND_S - time.monotonic()))
            lines = err.strip().splitlines()
            assert proc.returncode != 0, f"{name} exited 0"
            waiting = [ln for ln in lines if ln.startswith("waiting for database 127.0.0.1:")]
            assert waiting, f"{name} never said what it waits for: {lines[-5:]}"
            assert len(waiting) <= START_WAIT_S + 2, f"{name} retried {len(waiting)} times: no bound?"
            assert "Traceback" not in err, f"{name}: {err[-500:]}"
            assert "database" in lines[-1], f"{name}: last line {lines[-1]!r} does not say what failed"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert time.monotonic() - started < EXIT_BOUND_S + 1
