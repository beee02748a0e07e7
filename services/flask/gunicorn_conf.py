"""Gunicorn settings for flask-gunicorn-gevent, read from the benchlab service env contract.

This module is also the service's one parser of that contract: ``app.py`` imports
``DATABASE_URL`` and ``DB_POOL_SIZE`` from here. It must never import psycopg at module
level: the master loads it before any fork, and psycopg picks its (blocking or
gevent-cooperative) wait function once, at import. Run as a script, it is the bounded
wait for the database that the master performs at start-up in a child process.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import time

DEFAULT_DATABASE_URL = "postgresql://benchmarkdbuser:benchmarkdbpass@127.0.0.1:5432/hello_world"
DEFAULT_PORT = 8081
POOL_RESERVE = 0.10  # share of the server's max_connections left for psql, the verifier, ...
# Per worker. A gevent worker is one CPU-bound thread: a few connections cover its DB round
# trips, and more only add Postgres backends contending for the same cores (measured: at 512
# clients, 32 per worker cost Postgres ~1.5-2x the CPU per request that 4-8 did).
POOL_CAP = 8
WORKER_CONNECTIONS = 10_000  # per worker: TFB's plaintext steps go up to 16,384 connections
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _env_int(name: str, default: int, minimum: int) -> int:
    """An integer setting from the environment; a bad value stops the start with one clear line."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise SystemExit(f"flask-gunicorn-gevent: {name} must be an integer >= {minimum}, got {raw!r}")
    return value


def _pool_size(workers: int) -> int:
    """Per-worker pool: BENCHLAB_DB_POOL, else a fair share of the server's connections, capped."""
    max_db = _env_int("BENCHLAB_MAX_DB_CONNECTIONS", 2000, 1)
    budget = int(max_db * (1 - POOL_RESERVE))
    pool = _env_int("BENCHLAB_DB_POOL", min(POOL_CAP, budget // workers), 1)
    if pool < 1 or workers * pool > budget:
        raise SystemExit(
            f"flask-gunicorn-gevent: {workers} workers x {max(pool, 1)} connections exceeds {budget} "
            f"(BENCHLAB_MAX_DB_CONNECTIONS={max_db} less a {POOL_RESERVE:.0%} reserve)"
        )
    return pool


def _raise_open_file_limit() -> None:
    """Every client socket is a file: lift the soft limit to the hard one for 10k connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


DATABASE_URL = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
DB_WAIT_S = _env_int("BENCHLAB_DB_WAIT_S", 60, 0)
HOST = os.environ.get("BENCHLAB_HOST") or "127.0.0.1"
PORT = _env_int("BENCHLAB_PORT", DEFAULT_PORT, 1)
WORKERS = _env_int("BENCHLAB_WORKERS", len(os.sched_getaffinity(0)), 1)
DB_POOL_SIZE = _pool_size(WORKERS)

# --- gunicorn settings ---------------------------------------------------------------------
bind = f"[{HOST}]:{PORT}" if ":" in HOST else f"{HOST}:{PORT}"
workers = WORKERS
worker_class = "gevent"
worker_connections = WORKER_CONNECTIONS
backlog = 4096
# The gevent worker reads each request head, the first too, under one gevent.Timeout of
# `keepalive` seconds: it is both the idle keep-alive and the head-read timeout (slowloris).
# Load generators keep their connections busy; 10 s matches the FastAPI targets.
keepalive = 10
graceful_timeout = 5  # SIGTERM: in-flight requests get this long (the FastAPI targets' too)
# Request-head limits (gunicorn answers 414 / 431 / 400 beyond them): gunicorn's maximum line,
# its default field size and count.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 100
accesslog = None
errorlog = "-"
loglevel = "info"
preload_app = False  # the app (and psycopg) must be imported after gevent patches the worker
control_socket_disable = True  # one fixed socket path per user would collide between servers


def on_starting(server: object) -> None:
    """Master, before forking: record its pid for /benchlab/info, then wait (bounded) for the DB.

    The wait runs in a child process so psycopg is never imported into the master.
    """
    os.environ["BENCHLAB_MASTER_PID"] = str(os.getpid())
    _raise_open_file_limit()
    code = subprocess.run([sys.executable, os.path.abspath(__file__)], check=False).returncode
    if code:
        raise SystemExit(code)


def post_fork(server: object, worker: object) -> None:
    """Worker: die with the master. Gunicorn's gevent worker never checks that its master lives,
    so a killed master (SIGKILL) left its workers serving the port unsupervised."""
    die_with_master(int(os.environ["BENCHLAB_MASTER_PID"]))


def die_with_master(master_pid: int) -> None:
    """Linux: SIGTERM (gunicorn's graceful stop) from the kernel when the forking master dies;
    a master that died before the call never sends it, hence the check."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != master_pid:
        os.kill(os.getpid(), signal.SIGTERM)


# --- script: the bounded wait for the database ----------------------------------------------
def wait_for_database() -> int:
    """Connect until the database answers or DB_WAIT_S runs out; 0 on success, 1 on giving up."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(DATABASE_URL)
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname', '')}"
    deadline = time.monotonic() + DB_WAIT_S
    while True:
        try:
            psycopg.connect(DATABASE_URL, connect_timeout=2).close()
            return 0
        except psycopg.Error as exc:
            left = deadline - time.monotonic()
            error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if left <= 0:
                print(
                    f"flask-gunicorn-gevent: database {where} unavailable after {DB_WAIT_S}s: {error}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            print(f"waiting for database {where} ... ({left:.0f}s left)", file=sys.stderr, flush=True)
            time.sleep(min(1.0, left))


if __name__ == "__main__":
    sys.exit(wait_for_database())
