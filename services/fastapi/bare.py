"""The seven TechEmpower tests as a plain ASGI callable, no framework: the server's own ceiling
(asgi-uvicorn, started ``python serve.py uvicorn bare:app`` like fastapi-uvicorn).

Its database layer is db.py, the one app.py uses, so against fastapi-uvicorn only routing
(a dict lookup on the path), query parsing and response building differ: the framework's cost.
The server adds Server and Date; every response here sets Content-Type, and its body goes chunked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

import many_routes
import orjson
import target_kit
from upstream_client import UPSTREAM_ERRORS, Upstream

from db import DB_ERRORS, UNAVAILABLE, Database, render_fortunes, worker_lifespan

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Message = dict[str, Any]
# A handler's answer: the response start (one of the messages below) and the body.
Answer = tuple[Message, bytes]


def start(status: int, content_type: bytes, *extra: tuple[bytes, bytes]) -> Message:
    """A response start built once and sent as is: Uvicorn copies its headers and changes nothing.

    No Content-Length, so Uvicorn frames the body chunked, as the contract allows: the header costs
    Uvicorn 4,400 instructions per response (two regexes, lower() and int()), 3.5 % of a /json
    request (callgrind, one worker). TechEmpower's plain Uvicorn app sends none either. The step
    from this app to a framework, which always sends one, therefore includes that framing.
    """
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type), *extra]}


JSON = start(200, b"application/json")
TEXT = start(200, b"text/plain")
HTML = start(200, b"text/html; charset=utf-8")
NOT_FOUND = start(404, b"text/plain")
NOT_ALLOWED = start(405, b"text/plain", (b"allow", b"GET"))
UNAVAILABLE_START = start(503, b"application/json")
PLAINTEXT = b"Hello, World!"


class Worker:
    """What the lifespan opened in this worker process (one app per process, as every server here runs it)."""

    db: Database
    info: target_kit.Info
    upstream: Upstream


worker = Worker()


def query_value(query_string: bytes, name: bytes) -> str | None:
    """The first ``name=`` parameter, percent-decoded as Starlette decodes it; None if absent."""
    for pair in query_string.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return unquote_plus(value.decode("latin-1"))
    return None


async def json_serialization(query_string: bytes) -> Answer:
    return JSON, orjson.dumps({"message": "Hello, World!"})


async def plaintext(query_string: bytes) -> Answer:
    return TEXT, PLAINTEXT


async def single_query(query_string: bytes) -> Answer:
    return JSON, orjson.dumps(await worker.db.random_row())


async def multiple_queries(query_string: bytes) -> Answer:
    count = target_kit.clamp_queries(query_value(query_string, b"queries"))
    return JSON, orjson.dumps(await worker.db.random_rows(count))


async def fortunes(query_string: bytes) -> Answer:
    return HTML, render_fortunes(await worker.db.fortunes()).encode()


async def updates(query_string: bytes) -> Answer:
    count = target_kit.clamp_queries(query_value(query_string, b"queries"))
    return JSON, orjson.dumps(await worker.db.update_rows(count))


async def cached_queries(query_string: bytes) -> Answer:
    count = target_kit.clamp_queries(query_value(query_string, b"count"))
    return JSON, orjson.dumps(await worker.db.cached_rows(count))


async def upstream(query_string: bytes) -> Answer:
    """benchlab's own test (not TechEmpower's): one call to the upstream, its JSON returned."""
    return JSON, await worker.upstream.wait(target_kit.clamp_wait_ms(query_value(query_string, b"ms")))


async def benchlab_info(query_string: bytes) -> Answer:
    return JSON, orjson.dumps(worker.info.payload())


ROUTES: dict[str, Callable[[bytes], Awaitable[Answer]]] = {
    "/json": json_serialization,
    "/plaintext": plaintext,
    "/db": single_query,
    "/queries": multiple_queries,
    "/fortunes": fortunes,
    "/updates": updates,
    "/cached-queries": cached_queries,
    "/upstream": upstream,
    "/benchlab/info": benchlab_info,
}
UPSTREAM_STARTS = {error: start(error.status, b"application/json") for error in UPSTREAM_ERRORS}


async def lifespan(receive: Receive, send: Send) -> None:
    """db.py's per-worker start and stop, on the server's lifespan messages."""
    await receive()  # lifespan.startup
    async with worker_lifespan() as (worker.db, worker.info):
        worker.upstream = await Upstream().open()
        worker.info.static["upstream"] = Upstream.describe()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await worker.upstream.close()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        return
    route = ROUTES.get(scope["path"])
    if route is None and scope["method"] == "GET" and (hit := many_routes.parse(scope["path"])):
        head, body = JSON, orjson.dumps({"route": hit[0], "id": hit[1]})  # benchlab's own routes test
    elif route is None:
        head, body = NOT_FOUND, b"Not Found"
    elif scope["method"] != "GET":
        head, body = NOT_ALLOWED, b"Method Not Allowed"
    else:
        try:
            head, body = await route(scope["query_string"])
        except DB_ERRORS:
            # The pool reconnects by itself once the database is back; until then, say so quickly.
            head, body = UNAVAILABLE_START, UNAVAILABLE
        except UPSTREAM_ERRORS as exc:
            head, body = UPSTREAM_STARTS[type(exc)], exc.body
    await send(head)
    await send({"type": "http.response.body", "body": body})
