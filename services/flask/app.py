"""The seven TechEmpower tests on Flask 3, served by gunicorn's gevent worker.

Gunicorn imports this module in each worker after gevent has monkey-patched it
(``preload_app`` stays off, see gunicorn_conf.py): psycopg chooses its wait function at
import, and only then does it choose the one that yields to other greenlets while a query
runs. Settings come from target_kit, every service's one reader of the env contract.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from random import randint, sample
from typing import Any

import gevent
import orjson
import target_kit
from flask import Flask, Response, render_template, request
from greenlet import getcurrent, greenlet
from psycopg import Connection, Cursor, InterfaceError, OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout

MAX_QUERIES = 500
WORLD_ROWS = 10_000  # ids 1..10000, and random numbers 1..10000
WORLD_IDS = range(1, WORLD_ROWS + 1)
EXTRA_FORTUNE = (0, "Additional fortune added at request time.")

READ_WORLD = "SELECT id, randomnumber FROM world WHERE id = %s"
READ_ALL_WORLDS = "SELECT id, randomnumber FROM world"
READ_FORTUNES = "SELECT id, message FROM fortune"
# Driven by the (sorted) id array in a nested loop, so rows lock in id order: no deadlocks.
WRITE_WORLDS = (
    "UPDATE world SET randomnumber = v.r FROM unnest(%s::int[], %s::int[]) AS v(id, r) "
    "WHERE world.id = v.id"
)

# A healthy database gets time to drain a queue of requests under full load; one that has
# just failed gets a short wait, so requests fail fast (503) until a query succeeds again.
POOL_WAIT_S = 10.0
DOWN_WAIT_S = 1.0
UNAVAILABLE = orjson.dumps({"error": "database unavailable"})


class DatabaseSilent(Exception):
    """Thrown into a request's greenlet that waits on a database that stopped answering."""


DB_ERRORS = (OperationalError, InterfaceError, PoolTimeout, DatabaseSilent)


class StallWatch(target_kit.SilenceWatch):
    """target_kit's silence rule on the gevent hub: stuck request greenlets get DatabaseSilent."""

    def run(self) -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(target_kit.STALL_CHECK_S)
            for waiter in self.check():
                hub.loop.run_callback(self.interrupt, waiter)

    def interrupt(self, waiter: greenlet) -> None:
        """Run by the hub, as gevent.Timeout raises: the waiter is parked, so if it is still in
        database() the exception lands there (where the connection is then discarded)."""
        if waiter in self.waiting:
            del self.waiting[waiter]
            waiter.throw(DatabaseSilent("database stopped answering"))


WATCH = StallWatch()


class HeardCursor(Cursor[Any]):
    """Every completed statement tells the StallWatch the database is alive."""

    def execute(self, *args: Any, **kwargs: Any) -> HeardCursor:
        super().execute(*args, **kwargs)
        WATCH.heard()
        return self


# Per worker. A gevent worker is one CPU-bound thread: a few connections cover its DB round
# trips, and more only add Postgres backends contending for the same cores (measured: at 512
# clients, 32 per worker cost Postgres ~1.5-2x the CPU per request that 4-8 did).
POOL_CAP = 8
WORKERS = target_kit.workers()
POOL_SIZE = target_kit.pool_size(WORKERS, POOL_CAP)
POOL = ConnectionPool(
    target_kit.database_url(),
    min_size=POOL_SIZE,
    max_size=POOL_SIZE,
    kwargs={"autocommit": True, "connect_timeout": 2, "cursor_factory": HeardCursor},
    reconnect_timeout=2.0,  # give up a failed reconnect soon; the next request grows the pool again
    name="flask",
    open=False,
)
POOL.open(wait=False)  # the worker starts (and answers 503s) even while the database is down
atexit.register(POOL.close)  # a clean goodbye to Postgres, not a pool torn down by the GC
gevent.spawn(WATCH.run)

app = Flask(__name__)
_db_healthy = False  # until the first success, a database that may be down gets the short wait
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

    The StallWatch may throw DatabaseSilent into the wait; a connection interrupted mid-query
    is returned ACTIVE, which the pool closes instead of reusing.
    """
    global _db_healthy
    me = getcurrent()
    WATCH.waiting[me] = time.monotonic()
    try:
        try:
            conn = POOL.getconn(timeout=POOL_WAIT_S if _db_healthy else DOWN_WAIT_S)
            while not alive(conn):
                # Closed while idle: the pool discards it and opens a replacement. The database
                # may be gone for good, so the wait for one is the short one.
                POOL.putconn(conn)
                _db_healthy = False
                conn = POOL.getconn(timeout=DOWN_WAIT_S)
        except DB_ERRORS:
            _db_healthy = False
            raise
        try:
            yield conn
        except DB_ERRORS:
            _db_healthy = False
            raise
        finally:
            WATCH.waiting.pop(me, None)  # before putconn, which an interruption must not split
            POOL.putconn(conn)
    finally:
        WATCH.waiting.pop(me, None)
    _db_healthy = True


def query_count(name: str) -> int:
    """TFB's rule: missing, empty, non-integer or < 1 gives 1; > 500 gives 500."""
    try:
        n = int(request.args.get(name, ""))
    except ValueError:
        return 1
    return 1 if n < 1 else min(n, MAX_QUERIES)


def json_response(body: object) -> Response:
    return Response(orjson.dumps(body), content_type="application/json")


def database_unavailable(_exc: Exception) -> Response:
    return Response(UNAVAILABLE, status=503, content_type="application/json")


for _error in DB_ERRORS:
    app.register_error_handler(_error, database_unavailable)


@app.get("/json")
def json_test() -> Response:
    return json_response({"message": "Hello, World!"})


@app.get("/plaintext")
def plaintext() -> Response:
    return Response(b"Hello, World!", content_type="text/plain")


@app.get("/db")
def single_query() -> Response:
    with database() as conn:
        row = conn.execute(READ_WORLD, (randint(1, WORLD_ROWS),)).fetchone()
    return json_response({"id": row[0], "randomNumber": row[1]})


def read_worlds(conn: Connection, ids: list[int]) -> list[tuple[int, int]]:
    """One round trip per row, as the test demands."""
    cur = conn.cursor()
    rows = []
    for world_id in ids:
        cur.execute(READ_WORLD, (world_id,))
        rows.append(cur.fetchone())
    return rows


@app.get("/queries")
def multiple_queries() -> Response:
    n = query_count("queries")
    with database() as conn:
        rows = read_worlds(conn, [randint(1, WORLD_ROWS) for _ in range(n)])
    return json_response([{"id": i, "randomNumber": r} for i, r in rows])


@app.get("/updates")
def updates() -> Response:
    # Distinct ids (one value per row in the bulk UPDATE), sorted for the lock order.
    ids = sorted(sample(WORLD_IDS, query_count("queries")))
    numbers = [randint(1, WORLD_ROWS) for _ in ids]
    with database() as conn:
        read_worlds(conn, ids)
        conn.execute(WRITE_WORLDS, (ids, numbers))
    return json_response([{"id": i, "randomNumber": r} for i, r in zip(ids, numbers, strict=True)])


@app.get("/fortunes")
def fortunes() -> str:
    with database() as conn:
        rows = conn.execute(READ_FORTUNES).fetchall()
    rows.append(EXTRA_FORTUNE)
    rows.sort(key=itemgetter(1))
    return render_template("fortunes.html", fortunes=rows)


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


@app.get("/cached-queries")
def cached_queries() -> Response:
    cache = world_cache()
    return json_response([cache[randint(1, WORLD_ROWS)] for _ in range(query_count("count"))])


INFO = target_kit.Info(WORKERS)


@app.get("/benchlab/info")
def benchlab_info() -> Response:
    """What ran and what it costs, so the loadgen need not see the server's processes."""
    return json_response(INFO.payload())
