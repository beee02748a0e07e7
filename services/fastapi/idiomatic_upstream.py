"""``GET /upstream`` for the idiomatic FastAPI apps: benchlab's own test, not TechEmpower's.

As FastAPI's docs and httpx's teach it: one ``httpx.AsyncClient`` for the app's life (opened in
the lifespan, reached through a dependency), ``raise_for_status()``, the JSON returned as a dict
for FastAPI to serialise. Its pool is raised to target_kit.UPSTREAM_POOL connections, as a user
expecting thousands of concurrent calls sets it (httpx's default is 100), so the client pool is
not the first limit. A refused or broken connection is a 503, no answer in time a 504.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated, Any

import httpx
import target_kit
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

LIMITS = httpx.Limits(max_connections=target_kit.UPSTREAM_POOL, max_keepalive_connections=target_kit.UPSTREAM_POOL)

router = APIRouter()


def new_client() -> httpx.AsyncClient:
    """The app's one client (close it with ``aclose()`` when the app stops)."""
    return httpx.AsyncClient(base_url=target_kit.upstream_url(), limits=LIMITS)


def describe() -> dict[str, Any]:
    """For /benchlab/info: which client, and its pool."""
    return {"client": f"httpx {version('httpx')} AsyncClient", "pool": target_kit.UPSTREAM_POOL,
            "timeout": f"wait + {target_kit.UPSTREAM_GRACE_S:g} s"}  # fmt: skip


def get_client(request: Request) -> httpx.AsyncClient:
    return request.app.state.http


ClientDep = Annotated[httpx.AsyncClient, Depends(get_client)]
# Declared as text, read leniently as TFB reads its counts: junk gives the default, never a 422.
Wait = Annotated[str | None, Query(description="milliseconds the upstream waits, 0 to 10000 (default 20)")]


@router.get("/upstream")
async def upstream(client: ClientDep, ms: Wait = None) -> dict[str, Any]:
    wait = target_kit.clamp_wait_ms(ms)
    resp = await client.get("/", params={"ms": wait}, timeout=target_kit.upstream_timeout_s(wait))
    resp.raise_for_status()
    return resp.json()


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(httpx.TimeoutException)
    async def upstream_timeout(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "upstream timeout"}, status_code=504)

    @app.exception_handler(httpx.HTTPError)
    async def upstream_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "upstream unavailable"}, status_code=503)
