"""The seven TechEmpower tests on FastAPI + asyncpg, served by Uvicorn or Hypercorn (serve.py).

Rules from shared/tfb-contract.md: one query per row read (asyncpg's per-connection statement
cache reuses the prepared statement), fortunes sorted in Python and rendered by an
autoescaping template, counts clamped to 1..500 leniently. Responses are built as bytes
(orjson) so FastAPI does no validation or re-encoding on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from operator import itemgetter
from pathlib import Path
from random import randint, sample

import asyncpg
import jinja2
import orjson
import target_kit
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

WORLD_ROWS = 10_000
MAX_QUERIES = 500
WORLD_IDS = range(1, WORLD_ROWS + 1)
READ_ROW = "SELECT randomnumber FROM world WHERE id = $1"
READ_WORLD = "SELECT id, randomnumber FROM world"
READ_FORTUNES = "SELECT id, message FROM fortune"
# One statement for all rows; ids arrive sorted so concurrent updates lock rows in the same order.
WRITE_ROWS = (
    "UPDATE world SET randomnumber = new.r FROM unnest($1::int[], $2::int[]) AS new(id, r) WHERE world.id = new.id"
)
EXTRA_FORTUNE = (0, "Additional fortune added at request time.")
PLAINTEXT = b"Hello, World!"
# Starlette appends "; charset=utf-8" to text/* media types; the contract says exactly text/plain.
PLAINTEXT_HEADERS = {"content-type": "text/plain"}

# Bounds that turn an unreachable or hung database into a 503 instead of a hang. A stopped or
# restarting database is refused at once, well inside these. They must stay far above what a
# busy server sees: at 512 connections a query's wall time includes event-loop queueing (2 s
# cut off healthy /updates?queries=20 requests), and wrk's own request timeout is 8 s in TFB.
CONNECT_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 10.0
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

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
)
FORTUNES_PAGE = TEMPLATES.get_template("fortunes.html")
by_message = itemgetter(1)


class JSONBytes(Response):
    """A body already serialised by orjson."""

    media_type = "application/json"


def clamp_queries(raw: str | None) -> int:
    """TFB's rule: missing, empty, non-integer or < 1 gives 1; > 500 gives 500 (never a 422)."""
    try:
        n = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1
    return 1 if n < 1 else min(n, MAX_QUERIES)


async def load_world_cache(pool: asyncpg.Pool) -> dict[int, dict[str, int]]:
    """All world rows, ready to serialise; empty if the database is away (filled on demand)."""
    try:
        rows = await pool.fetch(READ_WORLD)
    except DB_ERRORS:
        return {}
    return {row_id: {"id": row_id, "randomNumber": number} for row_id, number in rows}


class StallWatch(target_kit.SilenceWatch):
    """target_kit's silence rule on the event loop: each stuck request's deadline is moved to now."""

    def query_done(self, query: asyncpg.connection.LoggedQuery) -> None:
        """Query logger: an answer, unless the query failed (a cancelled one is no answer)."""
        if query.exception is None:
            self.heard()

    async def on_connect(self, conn: asyncpg.Connection) -> None:
        """Pool ``init``: a new connection is an answer, and so is every query it completes."""
        self.heard()
        conn.add_query_logger(self.query_done)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(target_kit.STALL_CHECK_S)
            for deadline in self.check():
                deadline.reschedule(loop.time())


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset, an extra round trip of four statements per request.

    Safe because the app never changes session state: no SET, LISTEN, cursors or advisory
    locks, and no open transaction (asyncpg still rolls one back if it ever were).
    """


# Per-worker pool. TechEmpower's FastAPI uses min(1800 / cpu_count, 160), sized for its 28-core
# database host. Measured here (2 shared cores, /db and /queries at 512 connections): 4, 8 and 16
# perform alike, 32 worse, 160 about half the throughput -- hundreds of busy backends only
# context-switch. 16 keeps headroom for a database on another host (more round-trip time).
POOL_CAP = 16


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Per worker: a lazily filled pool (start-up never fails on the DB), the cache, /info data.

    Also the one hook both servers run in every worker at its start: tie its life to the master's.
    """
    target_kit.die_with_master(target_kit.master_pid())
    workers = target_kit.workers()
    watch = StallWatch()
    pool = await asyncpg.create_pool(
        target_kit.database_url(),
        min_size=0,
        max_size=target_kit.pool_size(workers, POOL_CAP),
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=QUERY_TIMEOUT_S,
        init=watch.on_connect,
        reset=keep_session,
    )
    app.state.pool = pool
    app.state.watch = watch
    app.state.world_cache = await load_world_cache(pool)
    app.state.info = target_kit.Info(workers)
    watcher = asyncio.create_task(watch.run())
    yield
    watcher.cancel()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await pool.close()
    except TimeoutError:
        pool.terminate()


@asynccontextmanager
async def database(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection whose wait (for the pool and its queries) ends in TimeoutError, a 503,
    when the database falls silent (StallWatch).

    A cancelled query leaves asyncpg sending a cancel request and releasing the connection only
    after the server answers it, which a frozen server never does: such a connection is dropped.
    """
    watch: StallWatch = request.app.state.watch
    async with asyncio.timeout(None) as deadline:
        watch.waiting[deadline] = time.monotonic()
        try:
            async with request.app.state.pool.acquire() as conn:
                try:
                    yield conn
                except asyncio.CancelledError:
                    conn.terminate()
                    raise
        finally:
            del watch.waiting[deadline]


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The pool reconnects by itself once the database is back; until then, say so quickly."""
    return JSONBytes(b'{"error":"database unavailable"}', status_code=503)


for error in DB_ERRORS:
    app.add_exception_handler(error, database_unavailable)


@app.get("/json")
async def json_serialization() -> Response:
    return JSONBytes(orjson.dumps({"message": "Hello, World!"}))


@app.get("/plaintext")
async def plaintext() -> Response:
    return Response(PLAINTEXT, headers=PLAINTEXT_HEADERS)


@app.get("/db")
async def single_query(request: Request) -> Response:
    row_id = randint(1, WORLD_ROWS)
    async with database(request) as conn:
        number = await conn.fetchval(READ_ROW, row_id)
    return JSONBytes(orjson.dumps({"id": row_id, "randomNumber": number}))


@app.get("/queries")
async def multiple_queries(request: Request) -> Response:
    ids = sample(WORLD_IDS, clamp_queries(request.query_params.get("queries")))
    async with database(request) as conn:
        rows = [{"id": row_id, "randomNumber": await conn.fetchval(READ_ROW, row_id)} for row_id in ids]
    return JSONBytes(orjson.dumps(rows))


@app.get("/fortunes")
async def fortunes(request: Request) -> Response:
    async with database(request) as conn:
        rows = [tuple(row) for row in await conn.fetch(READ_FORTUNES)]
    rows.append(EXTRA_FORTUNE)
    rows.sort(key=by_message)
    return HTMLResponse(FORTUNES_PAGE.render(fortunes=rows))


@app.get("/updates")
async def updates(request: Request) -> Response:
    ids = sorted(sample(WORLD_IDS, clamp_queries(request.query_params.get("queries"))))
    numbers = []
    async with database(request) as conn:
        for row_id in ids:
            old = await conn.fetchval(READ_ROW, row_id)
            # A uniform new value in 1..10000 that always differs from the stored one.
            new = randint(1, WORLD_ROWS - 1)
            numbers.append(new + 1 if new >= old else new)
        await conn.execute(WRITE_ROWS, ids, numbers)
    return JSONBytes(orjson.dumps([{"id": i, "randomNumber": n} for i, n in zip(ids, numbers, strict=True)]))


@app.get("/cached-queries")
async def cached_queries(request: Request) -> Response:
    cache = request.app.state.world_cache
    ids = sample(WORLD_IDS, clamp_queries(request.query_params.get("count")))
    missing = [row_id for row_id in ids if row_id not in cache]
    if missing:
        async with database(request) as conn:
            for row_id in missing:
                cache[row_id] = {"id": row_id, "randomNumber": await conn.fetchval(READ_ROW, row_id)}
    return JSONBytes(orjson.dumps([cache[row_id] for row_id in ids]))


@app.get("/benchlab/info")
async def benchlab_info(request: Request) -> Response:
    return JSONBytes(orjson.dumps(request.app.state.info.payload()))
