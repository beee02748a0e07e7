"""Serve a WSGI app of this folder under Granian: ``python serve_granian.py MODULE:APP``.

This process is Granian's master: it checks the env contract (target_kit) and the port, waits
(bounded) for the database so workers never crash-loop, exports BENCHLAB_MASTER_PID,
BENCHLAB_WORKERS and BENCHLAB_THREADS (the app's pool size, see db.py), then runs Granian's own
supervisor, which replaces a worker that dies and stops every worker on SIGTERM/SIGINT. Each
worker loads the app in load_app, which first ties the worker's life to the master's.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import head_limit
import target_kit

HERE = Path(__file__).resolve().parent
NAME = "serve_granian.py"
# wrk opens up to 16384 connections at once for plaintext; the kernel caps this at somaxconn.
BACKLOG = 4096
# Granian's backpressure caps the connections a worker accepts (not requests in flight), so it
# is gunicorn's worker_connections here: TFB's plaintext steps go up to 16,384 connections.
WORKER_CONNECTIONS = 10_000
# Python threads per worker running the app (the GIL runs one at a time; the others wait on
# the database); the app's pool gets one connection per thread. Measured (2 workers, 256
# clients, a shared 2-core machine): 4 halved /queries?queries=20 (each request waits on 20
# round trips), 8 and 16 were level, 32 cost more CPU per /db request; Granian's default here
# (backpressure / 2) would be 5,000.
BLOCKING_THREADS = 16
HEAD_TIMEOUT_MS = 10_000  # hyper's header read timeout (slowloris), as the other targets'
GRACEFUL_S = 5  # SIGTERM: in-flight requests get this long, then the worker is killed


def _probe(url: str, timeout_s: float) -> None:
    """One connection attempt, for target_kit's bounded wait (psycopg loaded only here)."""
    import psycopg

    psycopg.connect(url, connect_timeout=max(1, round(timeout_s))).close()


def load_app(target: str) -> Callable[..., Any]:
    """Run in each worker to load the app, behind target_kit's bound on a complete request head
    (hyper's buffer bounds only a head still arriving). Granian has no worker start hook, and its workers
    outlive a SIGKILLed master, so this is where a worker asks to die with it.

    Until Granian sets the worker's own handlers (after this), the worker has the master's,
    which only wake the master's loop: a SIGTERM from the master during the app's import would be
    lost. So SIGTERM first gets its default.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    target_kit.die_with_master(int(os.environ["BENCHLAB_MASTER_PID"]))
    module, _, attr = target.partition(":")
    return head_limit.WsgiHeadLimit(getattr(importlib.import_module(module), attr))


def run(app: str, host: str, port: int, workers: int) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=BLOCKING_THREADS,
        backlog=BACKLOG,
        backpressure=WORKER_CONNECTIONS,
        http=HTTPModes.http1,
        # hyper's buffer bounds a head still arriving (431 beyond); load_app one that arrived whole.
        http1_settings=HTTP1Settings(
            header_read_timeout=HEAD_TIMEOUT_MS, keep_alive=True, max_buffer_size=head_limit.MAX_HEAD
        ),
        log_level=LogLevels.info,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_S,
    )
    server.serve(target_loader=load_app)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        target_kit.fail(NAME, f"usage: {NAME} MODULE:APP; got {' '.join(argv) or 'nothing'}", 2)
    [app] = argv
    module, _, attr = app.partition(":")
    if not attr or not (HERE / f"{module}.py").is_file():
        target_kit.fail(NAME, f"expected MODULE:APP with MODULE.py in {HERE}; got {app!r}", 2)
    host, port, workers = target_kit.start_master(NAME, _probe, BENCHLAB_THREADS=str(BLOCKING_THREADS))
    run(app, host, port, workers)


if __name__ == "__main__":
    main(sys.argv[1:])
