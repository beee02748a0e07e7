"""The database side of this folder's WSGI apps (``app.py`` on Flask, ``bare.py`` on no framework):
the pool, the silence watch, the TechEmpower queries, the world cache and the 503 rule.

One module, so the two apps differ only in routing, request and response handling. It works
under gunicorn's gevent worker (greenlets, the server monkey-patched before importing us) and
under OS threads (gunicorn's gthread worker, Granian's blocking threads); which one is decided
once, at import, from whether gevent patched the socket module. psycopg picks its wait function
at import in the same way, so this module must be imported after the patching (gunicorn's
``preload_app`` stays off). Settings come from target_kit, every service's one reader of the env
contract.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from random import randint, sample
from typing import Any

import orjson
import target_kit
from psycopg import Connection, Cursor, InterfaceError, OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout


def _gevent_patched() -> bool:
    """Whether gevent monkey-patched this process; never imports gevent to find out."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


GEVENT = _gevent_patched()
if GEVENT:
    import gevent
    from greenlet import getcurrent

WORLD_ROWS = 10_000  # ids 1..10000, and random numbers 1..10000
WORLD_IDS = range(1, WORLD_ROWS + 1)
EXTRA_FORTUNE = (0, "Additional fortune added at request time.")

READ_WORLD = "SELECT id, randomnumber FROM world WHERE id = %s"
READ_ALL_WORLDS = "SELECT id, randomnumber FROM world"
READ_FORTUNES = "SELECT id, message FROM fortune"
# Driven by the (sorted) id array in a nested loop, so rows lock in id order: no deadlocks.
WRITE_WORLDS = "UPDATE world SET randomnumber = v.r FROM unnest(%s::int[], %s::int[]) AS v(id, r) WHERE world.id = v.id"

# A healthy database gets time to drain a queue of requests under full load; one that has
# just failed gets a short wait, so requests fail fast (503) until a query succeeds again.
POOL_WAIT_S = 10.0
DOWN_WAIT_S = 1.0
UNAVAILABLE = orjson.dumps({"error": "database unavailable"})  # the 503 body


class DatabaseSilent(Exception):
    """A request gave up on a database that stopped answering (the silence watch's verdict)."""


DB_ERRORS = (OperationalError, InterfaceError, PoolTimeout, DatabaseSilent)


class GeventStallWatch(target_kit.SilenceWatch):
    """target_kit's silence rule on the gevent hub: a stuck request greenlet gets DatabaseSilent
    thrown into it, wherever it waits (for a pooled connection or for a query)."""

    def start(self) -> None:
        gevent.spawn(self.run)

    def run(self) -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(target_kit.STALL_CHECK_S)
            for waiter in self.check():
                hub.loop.run_callback(self.interrupt, waiter)

    def interrupt(self, waiter: Any) -> None:
        """Run by the hub, as gevent.Timeout raises: the waiter is parked, so if it is still in
        database() the exception lands there (where the connection is then discarded)."""
        if waiter in self.waiting:
            del self.waiting[waiter]
            waiter.throw(DatabaseSilent("database stopped answering"))

    def enter(self) -> Any:
        me = getcurrent()
        self.waiting[me] = time.monotonic()
        return me

    def leave(self, waiter: Any) -> None:
        self.waiting.pop(waiter, None)

    def getconn(self, waiter: Any, timeout: float) -> Connection:
        return POOL.getconn(timeout=timeout)

    def putconn(self, waiter: Any, conn: Connection) -> None:
        POOL.putconn(conn)


class ThreadWaiter:
    """One request thread's wait on the database: the connection it holds, if any."""

    __slots__ = ("conn", "silenced")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.silenced = False


class ThreadStallWatch(target_kit.SilenceWatch):
    """target_kit's silence rule for request threads, from a daemon thread of its own.

    A thread blocked in a query cannot be interrupted, but its socket can: the watch shuts down
    the connection's socket, the wait in psycopg ends with OperationalError, and the pool
    discards the broken connection. A thread waiting for a pooled connection waits in slices of
    STALL_CHECK_S and gives up between two. One lock orders the watch against threads taking and
    returning connections, so it never shuts a socket that another request now uses.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self.run, name="stall-watch", daemon=True).start()

    def run(self) -> None:
        while True:
            time.sleep(target_kit.STALL_CHECK_S)
            with self.lock:
                silent = self.check()
            for waiter in silent:
                self.interrupt(waiter)

    def interrupt(self, waiter: ThreadWaiter) -> None:
        with self.lock:
            if self.waiting.pop(waiter, None) is None:
                return  # done meanwhile
            waiter.silenced = True
            if waiter.conn is not None:
                _shut_down(waiter.conn)

    def enter(self) -> ThreadWaiter:
        waiter = ThreadWaiter()
        with self.lock:
            self.waiting[waiter] = time.monotonic()
        return waiter

    def leave(self, waiter: ThreadWaiter) -> None:
        with self.lock:
            self.waiting.pop(waiter, None)
            waiter.conn = None

    def getconn(self, waiter: ThreadWaiter, timeout: float) -> Connection:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = POOL.getconn(timeout=max(0.0, min(target_kit.STALL_CHECK_S, deadline - time.monotonic())))
                break
            except PoolTimeout:
                if waiter.silenced or time.monotonic() >= deadline:
                    raise
        with self.lock:
            waiter.conn = conn
            silenced = waiter.silenced
        if silenced:  # given up on while the pool handed it over: the connection itself is fine
            self.putconn(waiter, conn)
            raise DatabaseSilent("database stopped answering")
        return conn

    def putconn(self, waiter: ThreadWaiter, conn: Connection) -> None:
        with self.lock:
            waiter.conn = None
        POOL.putconn(conn)


def _shut_down(conn: Connection) -> None:
    """End the waits on this connection's socket (both directions); psycopg then raises.

    Through a duplicate of the descriptor, so the connection's own stays open (never reused
    under psycopg's feet) until the pool closes the connection.
    """
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, OperationalError):
        pass  # already closed or lost (psycopg has no socket then): nothing waits on it


WATCH = GeventStallWatch() if GEVENT else ThreadStallWatch()


class HeardCursor(Cursor[Any]):
    """Every completed statement tells the watch the database is alive."""

    def execute(self, *args: Any, **kwargs: Any) -> HeardCursor:
        super().execute(*args, **kwargs)
        WATCH.heard()
        return self


# Per worker. A gevent worker is one CPU-bound thread: a few connections cover its DB round
# trips, and more only add Postgres backends contending for the same cores (measured: at 512
# clients, 32 per worker cost Postgres ~1.5-2x the CPU per request that 4-8 did). A threaded
# worker's request thread holds one connection at a time: its launcher says how many threads
# it runs (BENCHLAB_THREADS), and one connection per thread means no thread queues for one.
GEVENT_POOL_CAP = 8
THREADS = target_kit.env_int("BENCHLAB_THREADS", 1)
POOL_CAP = GEVENT_POOL_CAP if GEVENT else THREADS
WORKERS = target_kit.workers()
POOL_SIZE = target_kit.pool_size(WORKERS, POOL_CAP)
# Whether the database answered last time: a healthy one gets POOL_WAIT_S, one that just failed
# DOWN_WAIT_S. Set by every connection the pool opens and every request that got its rows.
_db_healthy = False


def _connected(conn: Connection) -> None:
    """The pool opened a connection: the database answers. So a worker's first burst (its pool
    just filled) gets the long wait; with the short one, a cold worker's queue of 256 requests
    for 8 connections failed in 1 s on a loaded machine, and each failure kept the wait short."""
    global _db_healthy
    _db_healthy = True


POOL = ConnectionPool(
    target_kit.database_url(),
    min_size=POOL_SIZE,
    max_size=POOL_SIZE,
    kwargs={"autocommit": True, "connect_timeout": 2, "cursor_factory": HeardCursor},
    configure=_connected,
    reconnect_timeout=2.0,  # give up a failed reconnect soon; the next request grows the pool again
    name="flask",
    open=False,
)
POOL.open(wait=False)  # the worker starts (and answers 503s) even while the database is down
atexit.register(POOL.close)  # a clean goodbye to Postgres, not a pool torn down by the GC
WATCH.start()

_world_cache: dict[int, dict[str, int]] = {}


def alive(conn: Connection) -> bool:
    """Whether the server behind an idle pooled connection is still there, without a round trip.

    A server that stopped (a restarted database) left its goodbye and then EOF in the socket:
    the first read takes the goodbye, the second hits EOF. A healthy idle connection has
    nothing to read, so both reads are non-blocking no-ops.
    """
    try:
        conn.pgconn.consume_input()
        conn.pgconn.consume_input()
    except OperationalError:
        return False
    return True


@contextmanager
def database() -> Iterator[Connection]:
    """A live pooled connection; records whether the database answers, to bound later waits.

    The watch may end the wait (DatabaseSilent, or the OperationalError of a shut socket); a
    connection interrupted mid-query is returned broken or ACTIVE, which the pool closes
    instead of reusing.
    """
    global _db_healthy
    waiter = WATCH.enter()
    try:
        try:
            conn = WATCH.getconn(waiter, POOL_WAIT_S if _db_healthy else DOWN_WAIT_S)
            while not alive(conn):
                # Closed while idle: the pool discards it and opens a replacement. The database
                # may be gone for good, so the wait for one is the short one.
                WATCH.putconn(waiter, conn)
                _db_healthy = False
                conn = WATCH.getconn(waiter, DOWN_WAIT_S)
        except DB_ERRORS:
            _db_healthy = False
            raise
        try:
            yield conn
        except DB_ERRORS:
            _db_healthy = False
            raise
        finally:
            WATCH.leave(waiter)  # before putconn, which an interruption must not split
            POOL.putconn(conn)
    finally:
        WATCH.leave(waiter)
    _db_healthy = True


def read_worlds(conn: Connection, ids: list[int]) -> list[tuple[int, int]]:
    """One round trip per row, as the test demands."""
    cur = conn.cursor()
    rows = []
    for world_id in ids:
        cur.execute(READ_WORLD, (world_id,))
        rows.append(cur.fetchone())
    return rows


def one_world() -> dict[str, int]:
    with database() as conn:
        world_id, number = conn.execute(READ_WORLD, (randint(1, WORLD_ROWS),)).fetchone()
    return {"id": world_id, "randomNumber": number}


def worlds(n: int) -> list[dict[str, int]]:
    with database() as conn:
        rows = read_worlds(conn, [randint(1, WORLD_ROWS) for _ in range(n)])
    return [{"id": i, "randomNumber": r} for i, r in rows]


def update_worlds(n: int) -> list[dict[str, int]]:
    # Distinct ids (one value per row in the bulk UPDATE), sorted for the lock order.
    ids = sorted(sample(WORLD_IDS, n))
    numbers = [randint(1, WORLD_ROWS) for _ in ids]
    with database() as conn:
        read_worlds(conn, ids)
        conn.execute(WRITE_WORLDS, (ids, numbers))
    return [{"id": i, "randomNumber": r} for i, r in zip(ids, numbers, strict=True)]


def fortunes() -> list[tuple[int, str]]:
    """Every fortune plus the request-time one, sorted by message here (TFB: no ORDER BY)."""
    with database() as conn:
        rows = conn.execute(READ_FORTUNES).fetchall()
    rows.append(EXTRA_FORTUNE)
    rows.sort(key=itemgetter(1))
    return rows


def world_cache() -> dict[int, dict[str, int]]:
    """This worker's copy of every world row, by id, loaded on first use.

    Checked again once a connection is in hand: of a crowd of first requests, only those
    already holding a connection (at most the pool size) load the table.
    """
    if not _world_cache:
        with database() as conn:
            if not _world_cache:
                rows = conn.execute(READ_ALL_WORLDS).fetchall()
                _world_cache.update((i, {"id": i, "randomNumber": r}) for i, r in rows)
    return _world_cache


def cached_worlds(n: int) -> list[dict[str, int]]:
    cache = world_cache()
    return [cache[randint(1, WORLD_ROWS)] for _ in range(n)]
