"""benchlab's own ``routes`` test (not TechEmpower's): 1,000 parameterised routes, registered
after an app's TechEmpower routes in FastAPI's normal way, ``/r0/{item_id}`` to
``/r999/{item_id}``, each answering ``{"route": n, "id": item_id}``.

Starlette tries an app's routes in order, one compiled pattern each, so ``GET /r999/{id}`` (the
test's path, the last of them) is matched after every other route of the app: what an API with
many endpoints costs its last-registered ones. Registered after the TechEmpower routes, which are
matched first and so pay nothing for these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

ROUTES = 1_000


class JSONBytes(Response):
    media_type = "application/json"


def add_fast(app: FastAPI) -> None:
    """The TechEmpower-style apps' way: the body built as bytes (orjson), no response model."""

    def handler(n: int) -> Callable[..., Any]:
        async def route(item_id: int) -> Response:
            return JSONBytes(orjson.dumps({"route": n, "id": item_id}))

        return route

    for n in range(ROUTES):
        app.add_api_route(f"/r{n}/{{item_id}}", handler(n), methods=["GET"], name=f"r{n}")


def add_idiomatic(app: FastAPI, *, sync: bool = False) -> None:
    """As FastAPI's docs teach: a path operation returning a dict, serialised by FastAPI; plain
    ``def`` for the sync app, whose endpoints all are."""

    def handler(n: int) -> Callable[..., Any]:
        async def route(item_id: int) -> dict[str, int]:
            return {"route": n, "id": item_id}

        def sync_route(item_id: int) -> dict[str, int]:
            return {"route": n, "id": item_id}

        return sync_route if sync else route

    for n in range(ROUTES):
        app.add_api_route(f"/r{n}/{{item_id}}", handler(n), methods=["GET"], name=f"r{n}")


def parse(path: str) -> tuple[int, int] | None:
    """The bare apps' way, having no router: ``/r<n>/<id>`` split by hand; None if it is not one."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or not parts[1].startswith("r"):
        return None
    n, item = parts[1][1:], parts[2]
    if not (n.isdigit() and item.isdigit()) or int(n) >= ROUTES or str(int(n)) != n:
        return None
    return int(n), int(item)
