"""The seven TechEmpower tests written as the Flask and Flask-SQLAlchemy documentation teach.

The flask-gunicorn-gevent-idiomatic target: the same server as app.py (gunicorn's gevent worker,
gunicorn_conf.py), but the code a Flask user writes for production: declarative models and
``db.session``, Flask's JSON provider, ``render_template``, error handlers. It measures what
that style costs next to app.py's hand-written SQL.

The driver is psycopg2, SQLAlchemy's default for ``postgresql://`` URLs and so the one
Flask-SQLAlchemy's configuration examples get, made cooperative under gevent by psycogreen (the
recipe for psycopg2 under gevent). psycopg 3 would be cooperative by itself, but its Python-level
execute path ran 13 % more instructions per /queries?queries=20 request here, and 27 % more with
the prepared SELECT below (callgrind: 13.2 M against 9.6 M). Gunicorn imports this module in each
worker after gevent has monkey-patched it (``preload_app`` stays off).
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from operator import attrgetter, itemgetter
from random import randint, sample
from typing import Any

import gevent
import idiomatic_upstream
import many_routes
import psycogreen.gevent
import target_kit
from flask import Blueprint, Flask, Response, render_template, request
from flask_sqlalchemy import SQLAlchemy
from greenlet import getcurrent, greenlet
from sqlalchemy import Engine, bindparam, event, make_url, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import Pool

psycogreen.gevent.patch_psycopg()  # before the first connection: each wait yields to the hub

MAX_QUERIES = 500
WORLD_ROWS = 10_000  # ids 1..10000, and random numbers 1..10000
WORLD_IDS = range(1, WORLD_ROWS + 1)
EXTRA_FORTUNE = "Additional fortune added at request time."
# A gevent worker is one CPU-bound thread; the ORM spends more of it per query than app.py
# does, so its few connections are busy less of the time. app.py's measured cap serves here too.
POOL_CAP = 8


class DatabaseSilent(TimeoutError):
    """Thrown into a request that waits on a database that stopped answering (frozen, not down).

    A TimeoutError, which SQLAlchemy treats as an interrupted wait: it discards the connection
    the request held instead of returning it, mid-query, to the pool.
    """


class StallWatch(target_kit.SilenceWatch):
    """The lab's frozen-database rule (target_kit) on the gevent hub: requests left waiting on a
    silent database get DatabaseSilent, hence a 503. A per-request gevent.Timeout would also cut
    the legitimate multi-second waits for a pooled connection at 512 clients."""

    def run(self) -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(target_kit.STALL_CHECK_S)
            for waiter in self.check():
                hub.loop.run_callback(self.interrupt, waiter, self.waiting[waiter])

    def interrupt(self, waiter: greenlet, started: float) -> None:
        """Run by the hub, as gevent.Timeout raises, so the waiter is parked (in a database wait);
        a connection's greenlet that has moved on to its next request is left alone."""
        if self.waiting.get(waiter) == started:
            del self.waiting[waiter]
            waiter.throw(DatabaseSilent("database stopped answering"))


WATCH = StallWatch()
gevent.spawn(WATCH.run)


@event.listens_for(Engine, "after_cursor_execute")
@event.listens_for(Pool, "connect")
def database_answered(*_args: Any) -> None:
    """Every completed statement, and every new connection, tells the StallWatch the database
    is alive."""
    WATCH.heard()


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class World(db.Model):
    __tablename__ = "world"

    id: Mapped[int] = mapped_column(primary_key=True)
    randomnumber: Mapped[int]

    def as_json(self) -> dict[str, int]:
        return {"id": self.id, "randomNumber": self.randomnumber}


# The primary-key read, built once: ``db.session.get`` builds a new SELECT and its cache key for
# every row, a fifth of the instructions /queries?queries=20 ran (callgrind: 16.8 M per request
# against 13.2 M with this statement). A read always queries, even an id the session holds.
WORLD_BY_ID = select(World).where(World.id == bindparam("id"))
# With a list of parameter sets holding the primary key, SQLAlchemy's "ORM bulk UPDATE by primary
# key": an executemany of one UPDATE per row, each sent whatever the value it writes.
WRITE_WORLDS = update(World)


def read_world(world_id: int) -> World:
    return db.session.scalars(WORLD_BY_ID, {"id": world_id}).one()


class Fortune(db.Model):
    __tablename__ = "fortune"

    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str]


class App(Flask):
    """Disconnects handled optimistically (SQLAlchemy's docs) instead of ``pool_pre_ping``,
    whose extra round trip per checkout cost /db about 20 % of its server CPU: a request whose
    pooled connection turns out dead (the database restarted) runs once more. SQLAlchemy has by
    then invalidated the whole pool, so a restart costs no request. Every view here only reads,
    or writes values it chooses afresh, so running it again is safe. A silent database is not
    retried: StallWatch's DatabaseSilent is no DBAPIError."""

    def dispatch_request(self) -> Any:
        try:
            return super().dispatch_request()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            db.session.rollback()
        return super().dispatch_request()


WORKERS = target_kit.workers()
POOL_SIZE = target_kit.pool_size(WORKERS, POOL_CAP)
app = App(__name__)
app.config.from_mapping(
    SQLALCHEMY_DATABASE_URI=make_url(target_kit.database_url()).set(drivername="postgresql+psycopg2"),
    SQLALCHEMY_ENGINE_OPTIONS={
        "pool_size": POOL_SIZE,
        "max_overflow": 0,  # the pool size is the worker's share of the connection budget
        # Each endpoint is one statement or a batch whose rows are independent: no transaction
        # to begin and roll back around them, and so nothing to reset when a connection returns.
        "isolation_level": "AUTOCOMMIT",
        "skip_autocommit_rollback": True,
        "pool_reset_on_return": None,
        "connect_args": {"connect_timeout": 2},
    },
)
db.init_app(app)


def open_pool() -> None:
    """Open this worker's connections before requests need them. Connecting costs Postgres a
    process and the worker an authentication: done for the first burst of clients (512 at once
    in the query-count check), it kept the database silent past the StallWatch's limit."""
    with app.app_context(), ExitStack() as connections:
        try:
            for _ in range(POOL_SIZE):
                connections.enter_context(db.engine.connect())
        except (OperationalError, InterfaceError):
            return  # the database is down; requests connect once it is back


gevent.spawn(open_pool)


# The views that query. The StallWatch's hooks run for these alone: on /json they were 4 % of
# the instructions per request (callgrind, in one process: 381 k with them, 365 k now).
database_views = Blueprint("database", __name__)


@database_views.before_request
def watch_request() -> None:
    """Between here and teardown_request a request parks only to wait on the database."""
    WATCH.waiting[getcurrent()] = time.monotonic()


@database_views.teardown_request
def unwatch_request(_error: BaseException | None) -> None:
    WATCH.waiting.pop(getcurrent(), None)


@app.errorhandler(OperationalError)
@app.errorhandler(InterfaceError)
@app.errorhandler(PoolTimeout)
@app.errorhandler(DatabaseSilent)
def database_unavailable(_error: Exception) -> tuple[dict[str, str], int]:
    return {"error": "database unavailable"}, 503


def query_count(name: str) -> int:
    """TFB's rule: missing, empty, non-integer or < 1 gives 1; > 500 gives 500."""
    n = request.args.get(name, 1, type=int)
    return 1 if n < 1 else min(n, MAX_QUERIES)


@app.get("/json")
def json_test() -> dict[str, str]:
    return {"message": "Hello, World!"}


@app.get("/plaintext")
def plaintext() -> Response:
    return Response("Hello, World!", mimetype="text/plain")


@database_views.get("/db")
def single_query() -> dict[str, int]:
    return read_world(randint(1, WORLD_ROWS)).as_json()


@database_views.get("/queries")
def multiple_queries() -> list[dict[str, int]]:
    worlds = [read_world(randint(1, WORLD_ROWS)) for _ in range(query_count("queries"))]
    return [w.as_json() for w in worlds]


@database_views.get("/updates")
def updates() -> list[dict[str, int]]:
    """Each row read by its own query, then all written by one ORM bulk UPDATE by primary key.

    Not by changing the objects and committing: the unit of work writes only the attributes whose
    value changed, and a new random number equals the stored one once in 10,000 rows, so
    TechEmpower's count of rows written came up short in most bursts of 512 x 20 rows.
    """
    # Distinct ids, each given one new number; written in id order, the order rows are locked in.
    worlds = [read_world(world_id) for world_id in sample(WORLD_IDS, query_count("queries"))]
    rows = sorted(({"id": w.id, "randomNumber": randint(1, WORLD_ROWS)} for w in worlds), key=itemgetter("id"))
    db.session.execute(WRITE_WORLDS, [{"id": r["id"], "randomnumber": r["randomNumber"]} for r in rows])
    db.session.commit()
    return rows


@database_views.get("/fortunes")
def fortunes() -> str:
    rows = list(db.session.scalars(select(Fortune)))
    rows.append(Fortune(id=0, message=EXTRA_FORTUNE))
    rows.sort(key=attrgetter("message"))
    return render_template("idiomatic_fortunes.html", fortunes=rows)


_world_cache: dict[int, dict[str, int]] = {}
_world_cache_lock = threading.Lock()  # gevent's, once patched: a crowd of first requests loads it once


def world_cache() -> dict[int, dict[str, int]]:
    """This worker's copy of every world row, by id, loaded on first use (the database may be
    down when the worker starts)."""
    if not _world_cache:
        with _world_cache_lock:
            if not _world_cache:
                _world_cache.update((world.id, world.as_json()) for world in db.session.scalars(select(World)))
    return _world_cache


@database_views.get("/cached-queries")
def cached_queries() -> list[dict[str, int]]:
    cache = world_cache()
    return [cache[randint(1, WORLD_ROWS)] for _ in range(query_count("count"))]


app.register_blueprint(database_views)
app.register_blueprint(idiomatic_upstream.blueprint)  # benchlab's own test, not TechEmpower's
INFO = target_kit.Info(WORKERS)
INFO.static["upstream"] = idiomatic_upstream.describe()


@app.get("/benchlab/info")
def benchlab_info() -> dict[str, Any]:
    """What ran and what it costs, so the loadgen need not see the server's processes."""
    return INFO.payload()


# benchlab's own routes test (not TechEmpower's): registered after every other route.
many_routes.add_idiomatic(app)
