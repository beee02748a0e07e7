"""Gunicorn settings for this folder's gunicorn targets, from the service environment contract
(target_kit): any app of the folder (``app:app``, ``bare:app``, ``idiomatic:app``) under the gevent
worker (the default here) or, given ``--worker-class gthread``, under gunicorn's gthread worker
with its request heads gated (GatedThreadWorker, swapped in by on_starting; see its docstring).

The apps do not import this module: all read the contract from target_kit. It must never
import psycopg: the master loads it before any fork, and psycopg picks its (blocking or
gevent-cooperative) wait function once, at import. Run as a script, it is one connection
attempt of the master's bounded wait for the database, in a child process.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

import target_kit
from gunicorn.workers.gthread import _DEFER, TConn, ThreadWorker

NAME = "gunicorn_conf.py"
WORKER_CONNECTIONS = 10_000  # per worker: TFB's plaintext steps go up to 16,384 connections
# Request threads per gthread worker (the app's pool gets one connection per thread). Measured
# (2 workers, 256 clients, /db and /fortunes, a shared 2-core machine): 8 gave the lowest rate
# in 2 of 3 rounds; 16 and 32 were level, at the same CPU per request, so 16: half the backends.
GTHREAD_THREADS = 16
HEAD_TIMEOUT_S = 10.0  # first byte of a request head to its end (slowloris), as the other targets'
# Bytes of an unfinished head the gate holds; a longer head goes to gunicorn's parser, whose
# limits below then answer it.
HEAD_GATE_BYTES = 64 * 1024


def _raise_open_file_limit() -> None:
    """Every client socket is a file: lift the soft limit to the hard one for 10k connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


try:  # what gunicorn's settings below need; on_starting's prologue checks the rest
    BIND = target_kit.bind_address()
    WORKERS = target_kit.workers()
except target_kit.SettingsError as exc:
    sys.stderr.write(f"{NAME}: {exc}\n")
    raise SystemExit(2) from None

# --- gunicorn settings ---------------------------------------------------------------------
bind = BIND
workers = WORKERS
worker_class = "gevent"
worker_connections = WORKER_CONNECTIONS
threads = GTHREAD_THREADS  # gthread only; the gevent worker ignores it
backlog = 4096
# The gevent worker reads each request head, the first too, under one gevent.Timeout of
# `keepalive` seconds: it is both the idle keep-alive and the head-read timeout (slowloris).
# gthread closes a connection idle for `keepalive` seconds, between requests or inside a head;
# a head that keeps trickling is GatedThreadWorker's HEAD_TIMEOUT_S. Load generators keep their
# connections busy; 10 s matches the FastAPI targets.
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


def on_starting(server: Any) -> None:
    """Master, before it binds or forks: the slowloris gate for gthread, then target_kit's
    launcher prologue (the settings, a free port, the bounded wait for the database; the
    master's pid exported for /benchlab/info and, for a threaded app, its thread count, its pool
    size: see db.py)."""
    _gate_heads(server)
    threaded = issubclass(server.worker_class, ThreadWorker)
    _raise_open_file_limit()
    target_kit.start_master(NAME, _probe, **({"BENCHLAB_THREADS": str(server.cfg.threads)} if threaded else {}))


def on_reload(server: Any) -> None:
    """Master, SIGHUP: the configuration was read again, the gthread worker with it."""
    _gate_heads(server)


def _gate_heads(server: Any) -> None:
    """gthread, as the command line asks, but with GatedThreadWorker's slowloris defence."""
    if server.worker_class is ThreadWorker:
        server.cfg.set("worker_class", GatedThreadWorker)
        server.worker_class = GatedThreadWorker


def post_fork(server: Any, worker: Any) -> None:
    """Worker: die with the master. Gunicorn's gevent worker never checks that its master lives,
    so a killed master (SIGKILL) left its workers serving the port unsupervised."""
    target_kit.die_with_master(int(os.environ["BENCHLAB_MASTER_PID"]))


class GatedThreadWorker(ThreadWorker):
    """gthread, except that a thread takes a request only once its head has arrived.

    Stock gthread (27.0.1) gives each connection's thread a blocking read of the head with no
    time limit: 200 slowloris clients held every thread of the worker, /json starved, and none
    was ever closed (measured). Here the thread reads only what is there (non-blocking, into
    gunicorn's own parser buffer); an unfinished head goes back to the worker's poller (gthread's
    deferral, no thread held) until more bytes come, and is dropped HEAD_TIMEOUT_S after it
    began. A complete head then runs exactly as in gthread, parsed from that buffer.
    """

    _next_sweep = 0.0

    def murder_pending(self) -> None:
        """gthread's sweep of deferred connections silent for `keepalive`, run every turn of the
        main loop; plus, twice a second, the heads past their deadline that still trickle in."""
        super().murder_pending()
        now = time.monotonic()
        if not self.pending_conns or now < self._next_sweep:
            return
        self._next_sweep = now + 0.5
        for conn in [c for c in self.pending_conns if c.head_deadline <= now]:
            self.pending_conns.remove(conn)
            with contextlib.suppress(OSError, KeyError, ValueError):  # as gthread's: unregistered already
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()

    def handle(self, conn: TConn) -> Any:
        ready = self.head_ready(conn)
        if ready:
            return super().handle(conn)
        if ready is None or not self.alive:
            conn.sock.close()  # abruptly, here: gthread's graceful close would linger in its main loop
            return False
        return _DEFER

    def head_ready(self, conn: TConn) -> bool | None:
        """True: a whole head is buffered (or HEAD_GATE_BYTES of one); False: not yet; None: the
        client hung up, or its head is past its deadline."""
        conn.init()  # the parser, once per connection (a no-op after)
        buf = conn.parser.unreader.buf
        held = buf.getvalue()  # pipelined requests, or the part of this head read before
        now = time.monotonic()
        deadline = getattr(conn, "head_deadline", None)
        if deadline is None:
            deadline = conn.head_deadline = now + HEAD_TIMEOUT_S
        while b"\r\n\r\n" not in held and len(held) < HEAD_GATE_BYTES:
            try:
                data = conn.sock.recv(HEAD_GATE_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False if now < deadline else None
            except OSError:
                return None
            if not data:
                return None
            buf.seek(0, os.SEEK_END)
            buf.write(data)
            held += data
        conn.head_deadline = None
        return True


# --- script: one connection attempt, for the master's bounded wait -------------------------
def _probe(url: str, timeout_s: float) -> None:
    """One connection attempt in a child process: psycopg never enters the master."""
    argv = [sys.executable, os.path.abspath(__file__), url, str(timeout_s)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"no answer within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise ConnectionError((done.stderr.strip().splitlines() or ["the connection attempt failed"])[-1])


if __name__ == "__main__":
    import psycopg

    try:
        psycopg.connect(sys.argv[1], connect_timeout=max(1, round(float(sys.argv[2])))).close()
    except psycopg.Error as exc:
        sys.exit((str(exc).strip().splitlines() or [type(exc).__name__])[0])
