"""The seven TechEmpower tests on FastAPI + asyncpg, served by Uvicorn, Hypercorn, Gunicorn's
Uvicorn workers or Granian (serve.py).

The database layer (pool, silence watch, queries, cache, fortunes template) is db.py, shared
with bare.py, the same tests without a framework. Responses are built as bytes (orjson) so
FastAPI does no validation or re-encoding on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import many_routes
import orjson
import target_kit
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from upstream_client import UPSTREAM_ERRORS, Upstream

from db import DB_ERRORS, UNAVAILABLE, Database, render_fortunes, worker_lifespan

PLAINTEXT = b"Hello, World!"
# Starlette appends "; charset=utf-8" to text/* media types; the contract says exactly text/plain.
PLAINTEXT_HEADERS = {"content-type": "text/plain"}


class JSONBytes(Response):
    """A body already serialised by orjson."""

    media_type = "application/json"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Per worker: db.py's pool and cache, the upstream client, and the /benchlab/info data."""
    async with worker_lifespan() as (db, info):
        app.state.db = db
        app.state.info = info
        app.state.upstream = await Upstream().open()
        info.static["upstream"] = Upstream.describe()
        try:
            yield
        finally:
            await app.state.upstream.close()


# Off, as the docs: FastAPI's built-in OpenTelemetry bridge asks on every request whether any
# provider is configured. Measured (fastapi-uvicorn, 2 workers, wrk -c64, two A/B pairs): plaintext
# 177-187 us of server CPU per request with it, 137-142 without; json and db within noise.
# The idiomatic app keeps FastAPI's default.
TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}
app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, telemetry=TELEMETRY_OFF)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The pool reconnects by itself once the database is back; until then, say so quickly."""
    return JSONBytes(UNAVAILABLE, status_code=503)


for error in DB_ERRORS:
    app.add_exception_handler(error, database_unavailable)


async def upstream_failed(request: Request, exc: Exception) -> Response:
    """503 for an upstream that is not there, 504 for one that does not answer in time."""
    return JSONBytes(exc.body, status_code=exc.status)  # type: ignore[attr-defined]


for error in UPSTREAM_ERRORS:
    app.add_exception_handler(error, upstream_failed)


def database(request: Request) -> Database:
    return request.app.state.db


@app.get("/json")
async def json_serialization() -> Response:
    return JSONBytes(orjson.dumps({"message": "Hello, World!"}))


@app.get("/plaintext")
async def plaintext() -> Response:
    return Response(PLAINTEXT, headers=PLAINTEXT_HEADERS)


@app.get("/db")
async def single_query(request: Request) -> Response:
    return JSONBytes(orjson.dumps(await database(request).random_row()))


@app.get("/queries")
async def multiple_queries(request: Request) -> Response:
    count = target_kit.clamp_queries(request.query_params.get("queries"))
    return JSONBytes(orjson.dumps(await database(request).random_rows(count)))


@app.get("/fortunes")
async def fortunes(request: Request) -> Response:
    return HTMLResponse(render_fortunes(await database(request).fortunes()))


@app.get("/updates")
async def updates(request: Request) -> Response:
    count = target_kit.clamp_queries(request.query_params.get("queries"))
    return JSONBytes(orjson.dumps(await database(request).update_rows(count)))


@app.get("/cached-queries")
async def cached_queries(request: Request) -> Response:
    count = target_kit.clamp_queries(request.query_params.get("count"))
    return JSONBytes(orjson.dumps(await database(request).cached_rows(count)))


@app.get("/upstream")
async def upstream(request: Request) -> Response:
    """benchlab's own test (not TechEmpower's): one call to the upstream, its JSON returned."""
    ms = target_kit.clamp_wait_ms(request.query_params.get("ms"))
    return JSONBytes(await request.app.state.upstream.wait(ms))


@app.get("/benchlab/info")
async def benchlab_info(request: Request) -> Response:
    return JSONBytes(orjson.dumps(request.app.state.info.payload()))


# benchlab's own routes test (not TechEmpower's): registered after every other route.
many_routes.add_fast(app)
