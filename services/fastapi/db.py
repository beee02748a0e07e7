"""The database layer both TechEmpower-style ASGI apps of this folder share: app.py (FastAPI) and
bare.py (no framework) import it, so the two differ only in routing, request parsing and
response building, and the gap between them is the framework's cost alone.

Rules from shared/tfb-contract.md: one query per row read (asyncpg's per-connection statement
cache reuses the prepared statement), fortunes sorted in Python and rendered by an
autoescaping template, counts clamped to 1..500 leniently. A database that is away or silent
raises one of DB_ERRORS, which each app answers with a 503 (UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from operator import itemgetter
from pathlib import Path
from random import randint, sample

import asyncpg
import jinja2
import target_kit

WORLD_ROWS = 10_000
WORLD_IDS = range(1, WORLD_ROWS + 1)
READ_ROW = "SELECT randomnumber FROM world WHERE id = $1"
READ_WORLD = "SELECT id, randomnumber FROM world"
READ_FORTUNES = "SELECT id, message FROM fortune"
# One statement for all rows; ids arrive sorted so concurrent updates lock rows in the same order.
WRITE_ROWS = (
    "UPDATE world SET randomnumber = new.r FROM unnest($1::int[], $2::int[]) AS new(id, r) WHERE world.id = new.id"
)
EXTRA_FORTUNE = (0, "Additional fortune added at request time.")
UNAVAILABLE = b'{"error":"database unavailable"}'

# Bounds that turn an unreachable or hung database into a 503 instead of a hang. A stopped or
# restarting database is refused at once, well inside these. They must stay far above what a
# busy server sees: at 512 connections a query's wall time includes event-loop queueing (2 s
# cut off healthy /updates?queries=20 requests), and wrk's own request timeout is 8 s in TFB.
# The database bound is one deadline per request (its pool wait and all its queries), not
# asyncpg's command_timeout: that arms and cancels a timer per query. Measured beside TFB's
# plain Uvicorn app (server CPU per /queries?queries=20 request, ours/theirs): 1.09 with it,
# 1.01 without.
CONNECT_TIMEOUT_S = 5.0
DB_TIMEOUT_S = 10.0
# What a lost, refused, restarting or timed-out database raises through asyncpg. The last one
# is what the next query on a connection gets after the server sent FATAL mid-request
# ("another operation is in progress"); the pool replaces that connection on release.
DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Per-worker pool. TechEmpower's FastAPI uses min(1800 / cpu_count, 160), sized for its 28-core
# database host. Measured here (2 shared cores, /db and /queries at 512 connections): 4, 8 and 16
# perform alike, 32 worse, 160 about half the throughput -- hundreds of busy backends only
# context-switch. 16 keeps headroom for a database on another host (more round-trip time).
POOL_CAP = 16

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
)
FORTUNES_PAGE = TEMPLATES.get_template("fortunes.html")
by_message = itemgetter(1)

Row = dict[str, int]


def render_fortunes(rows: list[tuple[int, str]]) -> str:
    """The fortunes page, every message escaped by the template."""
    return FORTUNES_PAGE.render(fortunes=rows)


class StallWatch(target_kit.SilenceWatch):
    """target_kit's silence rule on the event loop: each stuck request's deadline is moved to now.

    Database's queries call ``heard()`` as each completes: asyncpg's query loggers would do it
    too, at the cost of a context manager, a record and a scheduled callback per query.
    """

    async def on_connect(self, conn: asyncpg.Connection) -> None:
        """Pool ``init``: a new connection is an answer."""
        self.heard()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(target_kit.STALL_CHECK_S)
            for deadline in self.check():
                deadline.reschedule(loop.time())


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset, an extra round trip of four statements per request.

    Safe because the apps never change session state: no SET, LISTEN, cursors or advisory
    locks, and no open transaction (asyncpg still rolls one back if it ever were).
    """


class Database:
    """One worker's pool, its silence watch and its cache of world rows, and the tests' queries."""

    def __init__(self, pool: asyncpg.Pool, watch: StallWatch) -> None:
        self.pool = pool
        self.watch = watch
        self.world_cache: dict[int, Row] = {}
        self.watcher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, workers: int) -> Database:
        """A lazily filled pool (start-up never fails on the database) and the cache, if it can."""
        watch = StallWatch()
        pool = await asyncpg.create_pool(
            target_kit.database_url(),
            min_size=0,
            max_size=target_kit.pool_size(workers, POOL_CAP),
            timeout=CONNECT_TIMEOUT_S,
            init=watch.on_connect,
            reset=keep_session,
        )
        db = cls(pool, watch)
        with suppress(*DB_ERRORS):  # the database is away: the cache fills on demand
            db.world_cache = {row_id: {"id": row_id, "randomNumber": n} for row_id, n in await pool.fetch(READ_WORLD)}
        db.watcher = asyncio.create_task(watch.run())
        return db

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection whose wait (for the pool and its queries) ends in TimeoutError, a
        503, after DB_TIMEOUT_S, or sooner when the database falls silent (StallWatch).

        A cancelled query leaves asyncpg sending a cancel request and releasing the connection
        only after the server answers it, which a frozen server never does: such a connection
        is dropped.
        """
        async with asyncio.timeout(DB_TIMEOUT_S) as deadline:
            self.watch.waiting[deadline] = time.monotonic()
            try:
                async with self.pool.acquire() as conn:
                    try:
                        yield conn
                    except asyncio.CancelledError:
                        conn.terminate()
                        raise
            finally:
                del self.watch.waiting[deadline]

    async def random_row(self) -> Row:
        row_id = randint(1, WORLD_ROWS)
        async with self.connection() as conn:
            number = await conn.fetchval(READ_ROW, row_id)
        self.watch.heard()
        return {"id": row_id, "randomNumber": number}

    async def random_rows(self, count: int) -> list[Row]:
        heard, rows = self.watch.heard, []
        async with self.connection() as conn:
            for row_id in sample(WORLD_IDS, count):
                rows.append({"id": row_id, "randomNumber": await conn.fetchval(READ_ROW, row_id)})
                heard()
        return rows

    async def fortunes(self) -> list[tuple[int, str]]:
        """Every fortune plus the request-time one, sorted by message here (no ORDER BY)."""
        async with self.connection() as conn:
            rows = [tuple(row) for row in await conn.fetch(READ_FORTUNES)]
        self.watch.heard()
        rows.append(EXTRA_FORTUNE)
        rows.sort(key=by_message)
        return rows

    async def update_rows(self, count: int) -> list[Row]:
        ids = sorted(sample(WORLD_IDS, count))
        heard, numbers = self.watch.heard, []
        async with self.connection() as conn:
            for row_id in ids:
                old = await conn.fetchval(READ_ROW, row_id)
                heard()
                # A uniform new value in 1..10000 that always differs from the stored one.
                new = randint(1, WORLD_ROWS - 1)
                numbers.append(new + 1 if new >= old else new)
            await conn.execute(WRITE_ROWS, ids, numbers)
        heard()
        return [{"id": i, "randomNumber": n} for i, n in zip(ids, numbers, strict=True)]

    async def cached_rows(self, count: int) -> list[Row]:
        cache = self.world_cache
        ids = sample(WORLD_IDS, count)
        missing = [row_id for row_id in ids if row_id not in cache]
        if missing:
            async with self.connection() as conn:
                for row_id in missing:
                    cache[row_id] = {"id": row_id, "randomNumber": await conn.fetchval(READ_ROW, row_id)}
                    self.watch.heard()
        return [cache[row_id] for row_id in ids]


@asynccontextmanager
async def worker_lifespan() -> AsyncIterator[tuple[Database, target_kit.Info]]:
    """Each app's lifespan, per worker: the one hook every server here runs in every worker at
    its start, so it also ties the worker's life to the master's (target_kit)."""
    target_kit.die_with_master(target_kit.master_pid())
    workers = target_kit.workers()
    db = await Database.open(workers)
    try:
        yield db, target_kit.Info(workers)
    finally:
        await db.close()
