"""One gevent worker keeps many slow queries in flight at once: greenlets yield on database waits.

The test holds a lock that blocks every UPDATE of ``world``, sends N concurrent /updates to a
flask target running ONE worker, and then sees N of that worker's connections waiting on the
lock in pg_stat_activity at the same time. A worker that blocked on the database would show one.
Both gevent Flask apps: app.py's psycopg 3 yields by itself, idiomatic.py's psycopg2 only
through psycogreen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
import pytest

from benchlab.harness import NativeLab, repo_root, target_kit_dir
from benchlab.ports import free_port
from benchlab.targets import Target, load_targets
from benchlab.venvs import service_python

N = 12  # concurrent requests; the worker gets a pool of N + 4 so each has its own connection
WAIT_S = 30.0


@pytest.fixture(params=["flask-gunicorn-gevent", "flask-gunicorn-gevent-idiomatic"])
def one_worker_flask(
    lab: NativeLab, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Target, psutil.Process]]:
    """The flask target started with the registry command, BENCHLAB_WORKERS=1, on a free port."""
    [target] = load_targets([request.param])
    port = free_port()
    service_dir = repo_root() / "services" / target.service
    python = service_python(service_dir)
    env = dict(
        os.environ, DATABASE_URL=lab.dsn, BENCHLAB_WORKERS="1", BENCHLAB_PORT=str(port),
        BENCHLAB_HOST="127.0.0.1", BENCHLAB_DB_WAIT_S="10", BENCHLAB_DB_POOL=str(N + 4),
        PYTHONPATH=str(target_kit_dir(tmp_path)),
    )  # fmt: skip
    argv = [python if part == "python" else part for part in target.command]
    proc = subprocess.Popen(
        argv, cwd=service_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert proc.poll() is None, f"flask exited: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
            assert time.monotonic() < deadline, "flask did not answer /json"
            try:
                if httpx.get(url + "/json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 1, f"expected one worker, found {len(workers)}"
        # Both apps fill their pool at start, and requests queue behind the filling: wait for it.
        db_port = urlsplit(lab.dsn).port
        while len(_database_connections(workers[0], db_port)) < N + 4:
            assert time.monotonic() < deadline, "the worker did not open its pool"
            time.sleep(0.1)
        yield replace(target, port=port, url=url), workers[0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _database_connections(worker: psutil.Process, db_port: int | None) -> list[int]:
    """Local ports of the worker's connections to the database."""
    return [c.laddr.port for c in worker.net_connections(kind="tcp") if c.raddr and c.raddr.port == db_port]


def _lock_waiters(dsn: str) -> list[int]:
    """Client ports of this database's backends now waiting for a lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall()
    return [port for (port,) in rows]


def test_one_worker_overlaps_blocked_queries(lab: NativeLab, one_worker_flask: tuple[Target, psutil.Process]) -> None:
    target, worker = one_worker_flask
    url = f"{target.url}/updates?queries=1"
    with ThreadPoolExecutor(N) as pool, psycopg.connect(lab.dsn) as locker:
        locker.execute("LOCK TABLE world IN EXCLUSIVE MODE")  # reads pass, every UPDATE waits
        futures = [pool.submit(httpx.get, url, timeout=WAIT_S) for _ in range(N)]
        deadline = time.monotonic() + WAIT_S
        waiting: list[int] = []
        while len(waiting) < N and time.monotonic() < deadline:
            time.sleep(0.1)
            waiting = _lock_waiters(lab.dsn)
        worker_ports = {c.laddr.port for c in worker.net_connections(kind="tcp") if c.raddr}
        locker.rollback()  # releases the lock
        responses = [f.result(timeout=WAIT_S) for f in futures]

    assert len(waiting) == N, f"only {len(waiting)} of {N} requests were waiting in the database at once"
    assert set(waiting) <= worker_ports, "the waiting connections are not all the single worker's"
    assert [r.status_code for r in responses] == [200] * N
    assert all(len(r.json()) == 1 for r in responses)
