"""The upstream call of the TechEmpower-style WSGI apps (app.py, bare.py): benchlab's own
``upstream`` test, not TechEmpower's.

urllib3's connection pool for the one upstream host, the fastest well-kept blocking client
(requests is built on it, and adds a session, hooks and cookies per call): cooperative under
gevent once the worker is monkey-patched, a thread's blocking call under gthread and Granian.
Up to target_kit.UPSTREAM_POOL kept-alive connections per worker, never blocking for one, so
the pool is never the first limit. The body comes back as the upstream sent it. A refused or
broken connection is UpstreamUnavailable (503); no answer within the wait plus
target_kit.UPSTREAM_GRACE_S is UpstreamTimeout (504).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import target_kit
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError


class UpstreamUnavailable(Exception):
    status = "503 Service Unavailable"
    body = target_kit.UPSTREAM_UNAVAILABLE


class UpstreamTimeout(Exception):
    status = "504 Gateway Timeout"
    body = target_kit.UPSTREAM_TIMEOUT


UPSTREAM_ERRORS = (UpstreamUnavailable, UpstreamTimeout)
_where = urlsplit(target_kit.upstream_url())
POOL = urllib3.HTTPConnectionPool(
    _where.hostname or "127.0.0.1", _where.port or 80, maxsize=target_kit.UPSTREAM_POOL, block=False, retries=False
)


def wait(ms: int) -> bytes:
    try:
        resp = POOL.request(
            "GET", f"/?ms={ms}", timeout=urllib3.Timeout(total=target_kit.upstream_timeout_s(ms)), retries=False
        )
    except NewConnectionError:  # refused: a subclass of urllib3's TimeoutError, for history's sake
        raise UpstreamUnavailable from None
    except TimeoutError:
        raise UpstreamTimeout from None
    except (HTTPError, OSError):
        raise UpstreamUnavailable from None
    if resp.status != 200:
        raise UpstreamUnavailable
    return resp.data


def describe() -> dict[str, Any]:
    """For /benchlab/info: which client, and its pool."""
    return {"client": f"urllib3 {version('urllib3')} HTTPConnectionPool", "pool": target_kit.UPSTREAM_POOL,
            "timeout": f"wait + {target_kit.UPSTREAM_GRACE_S:g} s"}  # fmt: skip
