"""Without the database: quick 503s with a short JSON error, and recovery without a restart.

A frozen database (every Postgres process stopped by SIGSTOP, as `docker pause` freezes a
container) is answered as quickly as a stopped one, and recovered from by itself after SIGCONT.

Also at start-up: a target whose database is not there waits a bounded time, says what it waits
for, and exits non-zero with one clear line instead of crash-looping.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from helpers import own_targets, start_launcher

from benchlab.harness import NativeLab
from benchlab.ports import free_port
from benchlab.targets import Target

DOWN_ANSWER_S = 3.0  # bounded 503 while the database is down
RECOVER_S = 30.0
START_WAIT_S = 3  # BENCHLAB_DB_WAIT_S for the start-up test
EXIT_BOUND_S = START_WAIT_S + 12  # the wait plus interpreter and server start-up
DB_PATHS = ("/db", "/queries?queries=3", "/fortunes", "/updates?queries=2")
BURST = 64  # new connections at once: enough that every worker of a target gets some
FROZEN_S = 8.0  # how long Postgres stays frozen
FROZEN_ANSWER_S = 2.0  # bounded 503 while the database is frozen


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
    """Each DB path BURST/len(DB_PATHS) times, 16 at once, each on a new connection (spread over
    the workers). One client: a client per request costs the test process milliseconds of CPU
    each (its TLS set-up), which on a loaded machine is not the server's time."""
    paths = [DB_PATHS[i % len(DB_PATHS)] for i in range(BURST)]
    limits = httpx.Limits(max_connections=16)
    with (
        httpx.Client(timeout=10, limits=limits, headers={"Connection": "close"}) as client,
        ThreadPoolExecutor(16) as pool,
    ):
        return list(pool.map(lambda p: client.get(url + p).status_code, paths))


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


@contextmanager
def _frozen(lab: NativeLab) -> Iterator[None]:
    """Every Postgres process stopped (SIGSTOP) for the block, then continued, whatever happens."""
    assert lab.postgres is not None
    procs = lab.postgres.processes()
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)


def _frozen_round(lab: NativeLab) -> list[tuple[str, str, float, int]]:
    """Every DB path of every target once, all at once: (target, path, seconds, status).

    One client for the round: a client per request costs this loaded machine's test process
    up to a second of CPU (TLS set-up) when twelve start at once, which is not the server's time.
    """
    calls = [(rt.target, path) for rt in lab.running.values() for path in DB_PATHS]

    def call(client: httpx.Client, item: tuple[Target, str]) -> tuple[str, str, float, int]:
        target, path = item
        started = time.monotonic()
        resp = client.get(target.url + path)
        elapsed = time.monotonic() - started
        if resp.status_code == 503:
            assert resp.json() == {"error": "database unavailable"}, f"{target.name} {path}: {resp.text[:100]}"
        return target.name, path, elapsed, resp.status_code

    limits = httpx.Limits(max_connections=len(calls))
    with httpx.Client(timeout=DOWN_ANSWER_S + 5, limits=limits) as client, ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda item: call(client, item), calls))


def test_frozen_database_gives_quick_503_then_recovers(lab: NativeLab) -> None:
    for rt in lab.running.values():  # every pool holds connections the freeze will catch
        assert _burst_statuses(rt.target.url) == [200] * BURST, rt.target.name
    frozen_at = time.monotonic()
    with _frozen(lab):
        rounds = [_frozen_round(lab)]
        time.sleep(1.0)
        rounds.append(_frozen_round(lab))  # a second wave: still quick, not only the first
        for rt in lab.running.values():
            assert httpx.get(rt.target.url + "/json", timeout=5).status_code == 200, rt.target.name
        time.sleep(max(0.0, frozen_at + FROZEN_S - time.monotonic()))
    answers = [r for wave in rounds for r in wave]
    for name, path, elapsed, status in answers:
        print(f"frozen database: {name} {path}: {status} after {elapsed:.2f} s")
    for name, path, elapsed, status in answers:
        assert status == 503, f"{name} {path}: {status}"
        assert elapsed < FROZEN_ANSWER_S, f"{name} {path}: 503 after {elapsed:.2f} s"
    _assert_recovers(lab)


def test_start_waits_for_database_then_gives_up(tmp_path: Path) -> None:
    targets = own_targets()
    started = time.monotonic()
    procs = {
        t.name: start_launcher(
            t, tmp_path, BENCHLAB_DB_WAIT_S=str(START_WAIT_S), BENCHLAB_PORT=str(free_port()),
            DATABASE_URL=f"postgresql://benchmarkdbuser:benchmarkdbpass@127.0.0.1:{free_port()}/hello_world",
        )
        for t in targets
    }  # fmt: skip
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
