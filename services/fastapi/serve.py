"""Launch an ASGI app of this folder under one server: ``python serve.py SERVER [MODULE:APP]``
(SERVER: uvicorn, hypercorn, gunicorn-uvicorn or granian; the app defaults to ``app:app``, the
TechEmpower-style one).

This process is the master: it waits (bounded) for the database so workers never crash-loop,
exports BENCHLAB_MASTER_PID so any worker can report the whole process tree, then supervises
the workers: Uvicorn's, Gunicorn's or Granian's own supervisor, each of which replaces a dead
worker, or for Hypercorn this module's, because Hypercorn's stops the whole server when one
worker dies. Each stops every worker on SIGTERM/SIGINT; workers die with the master (target_kit,
from the apps' lifespan) if it is killed.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import head_limit
import target_kit

HERE = Path(__file__).resolve().parent
NAME = "serve.py"
DEFAULT_APP = "app:app"
# wrk opens up to 16384 connections at once for plaintext; the kernel caps this at somaxconn.
BACKLOG = 4096
# Idle keep-alive: load generators keep connections busy; this only bounds idle ones. Hypercorn
# also counts a connection still sending its request head as idle, so this is its head-read
# timeout too (slowloris); Uvicorn's (under Gunicorn too) is http_limits.HEAD_TIMEOUT_S, the same
# 10 s, and Granian's is HEAD_TIMEOUT_MS.
KEEP_ALIVE_S = 10
# Graceful stop (SIGTERM): in-flight requests get this long, then the worker exits anyway.
GRACEFUL_S = 5
# Granian (hyper): from a connection's start, or the end of its last response, to the end of the
# next request head. One timer for both, so it is the idle keep-alive as well as the slowloris
# bound: KEEP_ALIVE_S.
HEAD_TIMEOUT_MS = KEEP_ALIVE_S * 1000
# Granian's backpressure is a cap on the connections each worker accepts (default backlog /
# workers); TFB's plaintext steps hold up to 16,384. As gunicorn gevent's worker_connections.
GRANIAN_CONNECTIONS = 10_000
# A worker that keeps dying is a broken build, not bad luck: this many restarts within
# RESTART_WINDOW_S stop the Hypercorn target with an error (so the harness or compose sees it).
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def _probe(url: str, timeout_s: float) -> None:
    """One connection attempt, for target_kit's bounded wait."""

    async def connect() -> None:
        await (await asyncpg.connect(url, timeout=timeout_s)).close()

    asyncio.run(connect())


def limited_app(module: str, attr: str) -> head_limit.AsgiHeadLimit:
    """This folder's ``module.attr`` behind target_kit's bound on a complete request head: for
    Hypercorn, as an app factory in its application path, and as Granian's target loader."""
    return head_limit.AsgiHeadLimit(getattr(importlib.import_module(module), attr))


def load_limited(target: str) -> head_limit.AsgiHeadLimit:
    """Granian's target loader: ``MODULE:APP`` through limited_app."""
    module, _, attr = target.partition(":")
    return limited_app(module, attr)


def run_uvicorn(app: str, host: str, port: int, workers: int) -> None:
    import uvicorn
    from http_limits import LimitedHttpToolsProtocol

    uvicorn.run(
        app,
        app_dir=str(HERE),
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=LimitedHttpToolsProtocol,
        access_log=False,
        log_level="warning",
        backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_S,
    )


def run_gunicorn_uvicorn(app: str, host: str, port: int, workers: int) -> None:
    """Gunicorn's arbiter over uvicorn-worker's UvicornWorker, TechEmpower's default FastAPI
    variant (``gunicorn app:app -k uvicorn.workers.UvicornWorker``, a worker per CPU), with
    the Uvicorn target's loop, protocol and limits; the master replaces a dead worker."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.util import import_app
    from http_limits import LimitedHttpToolsProtocol
    from uvicorn_worker import UvicornWorker

    class LimitedUvicornWorker(UvicornWorker):
        """uvicorn's Config as run_uvicorn sets it; keep-alive and backlog come from Gunicorn's."""

        CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
            "loop": "uvloop",
            "http": LimitedHttpToolsProtocol,
            "access_log": False,
            "timeout_graceful_shutdown": GRACEFUL_S,
        }

    settings = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": LimitedUvicornWorker,
        "backlog": BACKLOG,
        "keepalive": KEEP_ALIVE_S,
        "graceful_timeout": GRACEFUL_S,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "control_socket_disable": True,  # one fixed socket path per user would collide between servers
    }

    class Gunicorn(BaseApplication):
        """Gunicorn configured here rather than from argv or a config file."""

        def load_config(self) -> None:
            for name, value in settings.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            return import_app(app)  # in each worker, after the fork (no preload)

    Gunicorn().run()


def run_granian(app: str, host: str, port: int, workers: int) -> None:
    """Granian (Rust, hyper) over ASGI with uvloop, HTTP/1 only, as TechEmpower's
    fastapi-granian (``--interface asgi --loop uvloop --workers $(nproc)``), with the limits of
    the other targets; Granian's master respawns a failed worker."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=BACKLOG,
        backpressure=GRANIAN_CONNECTIONS,
        # hyper's buffer bounds a head still arriving (431 beyond); load_limited one that arrived whole.
        http1_settings=HTTP1Settings(
            header_read_timeout=HEAD_TIMEOUT_MS, keep_alive=True, max_buffer_size=head_limit.MAX_HEAD
        ),
        log_level=LogLevels.warning,
        log_access=False,
        respawn_failed_workers=True,
        # Also the bound for a worker told to stop while it still imports the app: until Granian
        # installs its handlers there, it runs the master's inherited ones and never stops itself.
        workers_kill_timeout=GRACEFUL_S,
        working_dir=HERE,
    ).serve(target_loader=load_limited)


def run_hypercorn(app: str, host: str, port: int, workers: int) -> None:
    from hypercorn.config import Config

    config = Config()
    module, _, attr = app.partition(":")
    # An app factory (Hypercorn evaluates what follows the colon in the module): serve.limited_app.
    config.application_path = f"{HERE / NAME}:limited_app({module!r}, {attr!r})"
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.workers = workers
    config.worker_class = "uvloop"
    config.accesslog = None
    config.loglevel = "WARNING"
    config.backlog = BACKLOG
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.graceful_timeout = GRACEFUL_S
    # h11 bounds a head still arriving (431 beyond); limited_app one that arrived whole.
    config.h11_max_incomplete_size = head_limit.MAX_HEAD
    # Hypercorn closes a connection after 1000 requests by default; wrk keeps connections for a
    # whole step (and pipelines plaintext 16 deep), so that cap would only add reconnects.
    config.keep_alive_max_requests = 2**31
    sys.exit(supervise_hypercorn(config))


def supervise_hypercorn(config: Any) -> int:
    """Hypercorn's workers under a supervisor that replaces a dead one, as gunicorn's and
    uvicorn's do; hypercorn.run.run() instead stops every worker when any exits non-zero.

    Workers are Hypercorn's own (spawned, sharing the listening sockets, stopping when the
    shared event is set). Exit status: 0 after SIGTERM/SIGINT, 1 after a restart loop.
    """
    from hypercorn.asyncio.run import uvloop_worker

    sockets = config.create_sockets()
    ctx = multiprocessing.get_context("spawn")
    shutdown = ctx.Event()

    def start() -> BaseProcess:
        process = ctx.Process(
            target=uvloop_worker, kwargs={"config": config, "shutdown_event": shutdown, "sockets": sockets}
        )
        process.start()
        return process

    def stop(signum: int, frame: object) -> None:
        shutdown.set()

    # Workers inherit SIGINT ignored (a terminal's Ctrl-C reaches the whole group): the master
    # alone decides, through the shared event. SIGTERM keeps its default, an immediate exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes = [start() for _ in range(config.workers)]
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    restarts: deque[float] = deque(maxlen=MAX_RESTARTS)
    code = 0
    while not shutdown.is_set():
        wait([p.sentinel for p in processes], timeout=0.5)
        for i, process in enumerate(processes):
            if process.exitcode is None or shutdown.is_set():
                continue
            now = time.monotonic()
            if len(restarts) == MAX_RESTARTS and now - restarts[0] < RESTART_WINDOW_S:
                print(
                    f"serve.py: hypercorn worker {process.pid} exited ({process.exitcode}), the "
                    f"{MAX_RESTARTS + 1}th death in {RESTART_WINDOW_S:.0f} s: stopping",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
                code = 1
                shutdown.set()
                break
            restarts.append(now)
            print(
                f"serve.py: hypercorn worker {process.pid} exited ({process.exitcode}); starting another",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            processes[i] = start()
    deadline = time.monotonic() + GRACEFUL_S + 2
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.close()
    return code


SERVERS: dict[str, Callable[[str, str, int, int], None]] = {
    "uvicorn": run_uvicorn,
    "hypercorn": run_hypercorn,
    "gunicorn-uvicorn": run_gunicorn_uvicorn,
    "granian": run_granian,
}


def main(argv: list[str]) -> None:
    if not 1 <= len(argv) <= 2 or argv[0] not in SERVERS:
        got = repr(argv[0]) if argv else "nothing"
        target_kit.fail(NAME, f"usage: serve.py SERVER [MODULE:APP], SERVER one of {', '.join(SERVERS)}; got {got}", 2)
    server, app = argv[0], (argv[1] if len(argv) == 2 else DEFAULT_APP)
    module, _, attr = app.partition(":")
    if not attr or not (HERE / f"{module}.py").is_file():
        target_kit.fail(NAME, f"expected MODULE:APP with MODULE.py in {HERE}; got {app!r}", 2)
    host, port, workers = target_kit.start_master(f"{NAME} {server}", _probe)
    SERVERS[server](app, host, port, workers)


if __name__ == "__main__":
    main(sys.argv[1:])
