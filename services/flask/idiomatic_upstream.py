"""``GET /upstream`` for the idiomatic Flask app: benchlab's own test, not TechEmpower's.

As requests' docs teach it: one ``requests.Session`` reused for every call (its pool keeps
connections alive), ``raise_for_status()``, the JSON returned with ``jsonify``. Under gunicorn's
gevent worker the monkey-patching makes it cooperative. Its adapter's pool is raised to
target_kit.UPSTREAM_POOL connections (requests' default keeps 10), so the client pool is not the
first limit. A refused or broken connection is a 503, no answer in time a 504.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import requests
import target_kit
from flask import Blueprint, Response, jsonify, request
from requests.adapters import HTTPAdapter

blueprint = Blueprint("upstream", __name__)
session = requests.Session()
session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=target_kit.UPSTREAM_POOL))
URL = target_kit.upstream_url() + "/"


def describe() -> dict[str, Any]:
    """For /benchlab/info: which client, and its pool."""
    return {"client": f"requests {version('requests')} Session", "pool": target_kit.UPSTREAM_POOL,
            "timeout": f"wait + {target_kit.UPSTREAM_GRACE_S:g} s"}  # fmt: skip


@blueprint.get("/upstream")
def upstream() -> Response:
    ms = target_kit.clamp_wait_ms(request.args.get("ms"))
    resp = session.get(URL, params={"ms": ms}, timeout=target_kit.upstream_timeout_s(ms))
    resp.raise_for_status()
    return jsonify(resp.json())


@blueprint.app_errorhandler(requests.Timeout)
def upstream_timeout(exc: Exception) -> tuple[Response, int]:
    return jsonify(error="upstream timeout"), 504


@blueprint.app_errorhandler(requests.RequestException)
def upstream_unavailable(exc: Exception) -> tuple[Response, int]:
    return jsonify(error="upstream unavailable"), 503
