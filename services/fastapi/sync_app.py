"""The seven TechEmpower tests on FastAPI written with plain ``def`` endpoints and a synchronous
driver, as many write FastAPI when they come from Flask: the ``fastapi-uvicorn-sync`` target.

FastAPI runs every ``def`` endpoint on AnyIO's worker-thread pool (40 threads by default: its
default limiter), so a request holds a thread for its whole wait on the database or upstream,
and a worker serves at most that many at once. The database side is psycopg 3's sync pool with
one connection per thread (``sync_db.py`` is the Flask apps' ``db.py``, shared, not copied: its
threaded mode, pool sizing by BENCHLAB_THREADS, the silence watch that answers a frozen database
with a 503, the queries). The rest is written as FastAPI's docs teach, like ``idiomatic.py``:
Pydantic response models, declared query parameters, ``Jinja2Templates``, exception handlers,
a lifespan; ``/upstream`` calls the upstream with httpx's sync ``Client``. Against
``fastapi-uvicorn-idiomatic`` the difference is ``def`` against ``async def`` and a threaded
sync driver against an async one. ``/benchlab/info`` records both pool sizes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import httpx
import idiomatic_upstream
import many_routes
import target_kit
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

# AnyIO's default thread limiter: what FastAPI runs ``def`` endpoints on. The database pool gets
# one connection per thread (sync_db reads BENCHLAB_THREADS at import), so no thread queues for one.
ANYIO_THREADS = 40
os.environ.setdefault("BENCHLAB_THREADS", str(ANYIO_THREADS))

import sync_db as db  # noqa: E402  (after BENCHLAB_THREADS: it sizes the pool at import)

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
http = httpx.Client(base_url=target_kit.upstream_url(), limits=idiomatic_upstream.LIMITS)


class WorldOut(BaseModel):
    id: int
    randomNumber: int


class Message(BaseModel):
    message: str


Count = Annotated[str | None, Query(description="rows, 1 to 500; missing, junk or < 1 gives 1, > 500 gives 500")]
Wait = Annotated[str | None, Query(description="milliseconds the upstream waits, 0 to 10000 (default 20)")]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Per worker: die with the master; record the thread pool and the database pool."""
    target_kit.die_with_master(target_kit.master_pid())
    info = target_kit.Info(db.WORKERS)
    info.static["threads"] = anyio.to_thread.current_default_thread_limiter().total_tokens
    info.static["db_pool"] = db.POOL_SIZE
    info.static["upstream"] = {
        "client": f"httpx {version('httpx')} Client", "pool": target_kit.UPSTREAM_POOL,
        "timeout": f"wait + {target_kit.UPSTREAM_GRACE_S:g} s",
    }  # fmt: skip
    app.state.info = info
    yield


app = FastAPI(title="benchlab: TechEmpower tests, FastAPI with def endpoints", lifespan=lifespan)
idiomatic_upstream.add_error_handlers(app)


@app.exception_handler(db.OperationalError)
@app.exception_handler(db.InterfaceError)
@app.exception_handler(db.PoolTimeout)
@app.exception_handler(db.DatabaseSilent)
async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The pool reconnects by itself once the database is back; until then, say so quickly."""
    return Response(db.UNAVAILABLE, status_code=503, media_type="application/json")


def rows(pairs: list[dict[str, int]]) -> list[WorldOut]:
    return [WorldOut(**row) for row in pairs]


@app.get("/json")
def json_serialization() -> Message:
    return Message(message="Hello, World!")


@app.get("/plaintext")
def plaintext() -> Response:
    # PlainTextResponse would add "; charset=utf-8"; the contract says exactly text/plain.
    return Response(b"Hello, World!", headers={"content-type": "text/plain"})


@app.get("/db")
def single_query() -> WorldOut:
    return WorldOut(**db.one_world())


@app.get("/queries")
def multiple_queries(queries: Count = None) -> list[WorldOut]:
    return rows(db.worlds(target_kit.clamp_queries(queries)))


@app.get("/fortunes", response_class=HTMLResponse)
def fortunes(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "fortunes.html", {"fortunes": db.fortunes()})


@app.get("/updates")
def updates(queries: Count = None) -> list[WorldOut]:
    return rows(db.update_worlds(target_kit.clamp_queries(queries)))


@app.get("/cached-queries")
def cached_queries(count: Count = None) -> list[WorldOut]:
    return rows(db.cached_worlds(target_kit.clamp_queries(count)))


@app.get("/upstream")
def upstream(ms: Wait = None) -> dict[str, Any]:
    """benchlab's own test (not TechEmpower's): one call to the upstream, its JSON returned."""
    wait = target_kit.clamp_wait_ms(ms)
    resp = http.get("/", params={"ms": wait}, timeout=target_kit.upstream_timeout_s(wait))
    resp.raise_for_status()
    return resp.json()


@app.get("/benchlab/info")
def benchlab_info(request: Request) -> dict[str, Any]:
    return request.app.state.info.payload()


# benchlab's own routes test (not TechEmpower's): registered after every other route.
many_routes.add_idiomatic(app, sync=True)
