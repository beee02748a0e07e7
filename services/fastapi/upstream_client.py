"""The upstream call of the TechEmpower-style ASGI apps (app.py, bare.py): benchlab's own
``upstream`` test, not TechEmpower's.

aiohttp's client, the fastest well-kept asyncio HTTP client: one session per worker, its
connector pooling up to target_kit.UPSTREAM_POOL kept-alive connections (above any level the
lab sends, so the pool is never the first limit). The body comes back as the upstream sent it.
A refused or broken connection is UpstreamUnavailable (503); no answer within the wait plus
target_kit.UPSTREAM_GRACE_S is UpstreamTimeout (504).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import aiohttp
import target_kit


class UpstreamUnavailable(Exception):
    status = 503
    body = target_kit.UPSTREAM_UNAVAILABLE


class UpstreamTimeout(Exception):
    status = 504
    body = target_kit.UPSTREAM_TIMEOUT


UPSTREAM_ERRORS = (UpstreamUnavailable, UpstreamTimeout)


class Upstream:
    """One worker's session; ``open()`` in its lifespan (a session needs the running loop)."""

    def __init__(self) -> None:
        self.url = target_kit.upstream_url() + "/"
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> Upstream:
        connector = aiohttp.TCPConnector(
            limit=target_kit.UPSTREAM_POOL, limit_per_host=target_kit.UPSTREAM_POOL, keepalive_timeout=30
        )
        # No cookie jar, no response decompression: a service-to-service call needs neither.
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )
        return self

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def wait(self, ms: int) -> bytes:
        assert self.session is not None, "Upstream.open() not called"
        try:
            async with asyncio.timeout(target_kit.upstream_timeout_s(ms)):
                async with self.session.get(self.url, params={"ms": str(ms)}) as resp:
                    body = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable from None
        if resp.status != 200:
            raise UpstreamUnavailable
        return body

    @staticmethod
    def describe() -> dict[str, Any]:
        """For /benchlab/info: which client, and its pool."""
        return {"client": f"aiohttp {version('aiohttp')}", "pool": target_kit.UPSTREAM_POOL,
                "timeout": f"wait + {target_kit.UPSTREAM_GRACE_S:g} s"}  # fmt: skip
