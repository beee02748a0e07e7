"""Gunicorn settings for flask-gunicorn-gevent, from the service environment contract (target_kit).

The app does not import this module: both read the contract from target_kit. It must never
import psycopg: the master loads it before any fork, and psycopg picks its (blocking or
gevent-cooperative) wait function once, at import. Run as a script, it is the bounded wait for
the database that the master performs at start-up in a child process.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import target_kit

NAME = "flask-gunicorn-gevent"
WORKER_CONNECTIONS = 10_000  # per worker: TFB's plaintext steps go up to 16,384 connections


def _raise_open_file_limit() -> None:
    """Every client socket is a file: lift the soft limit to the hard one for 10k connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


try:
    BIND = target_kit.bind_address()
    WORKERS = target_kit.workers()
    # The app sizes its pool (its own cap); whether workers x pool fits the budget does not
    # depend on the cap, so the master refuses a bad budget here, once, with cap 1.
    target_kit.pool_size(WORKERS, cap=1)
    target_kit.env_int("BENCHLAB_DB_WAIT_S", target_kit.DEFAULT_DB_WAIT_S, minimum=0)
except target_kit.SettingsError as exc:
    sys.stderr.write(f"{NAME}: {exc}\n")
    raise SystemExit(2) from None

# --- gunicorn settings ---------------------------------------------------------------------
bind = BIND
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
    target_kit.die_with_master(int(os.environ["BENCHLAB_MASTER_PID"]))


# --- script: the bounded wait for the database ----------------------------------------------
def _probe(url: str, timeout_s: float) -> None:
    import psycopg

    psycopg.connect(url, connect_timeout=max(1, round(timeout_s))).close()


if __name__ == "__main__":
    target_kit.wait_for_database(_probe, NAME)
