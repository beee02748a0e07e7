"""The seven TechEmpower tests on Flask 3, for gunicorn's gevent and gthread workers and Granian.

Routing, request parsing and responses are Flask's; the database side (pool, silence watch,
queries, world cache) is db.py's, shared with bare.py so the two differ only in the framework.
Under gevent this module must be imported after the worker is monkey-patched (see db.py).
"""

from __future__ import annotations

import many_routes
import orjson
import target_kit
import upstream_client
from flask import Flask, Response, render_template, request

import db

app = Flask(__name__)


def json_response(body: object) -> Response:
    return Response(orjson.dumps(body), content_type="application/json")


def database_unavailable(_exc: Exception) -> Response:
    return Response(db.UNAVAILABLE, status=503, content_type="application/json")


for _error in db.DB_ERRORS:
    app.register_error_handler(_error, database_unavailable)


def upstream_failed(exc: upstream_client.UpstreamUnavailable | upstream_client.UpstreamTimeout) -> Response:
    """503 for an upstream that is not there, 504 for one that does not answer in time."""
    return Response(exc.body, status=exc.status, content_type="application/json")


for _error in upstream_client.UPSTREAM_ERRORS:
    app.register_error_handler(_error, upstream_failed)


@app.get("/json")
def json_test() -> Response:
    return json_response({"message": "Hello, World!"})


@app.get("/plaintext")
def plaintext() -> Response:
    return Response(b"Hello, World!", content_type="text/plain")


@app.get("/db")
def single_query() -> Response:
    return json_response(db.one_world())


@app.get("/queries")
def multiple_queries() -> Response:
    return json_response(db.worlds(target_kit.clamp_queries(request.args.get("queries"))))


@app.get("/updates")
def updates() -> Response:
    return json_response(db.update_worlds(target_kit.clamp_queries(request.args.get("queries"))))


@app.get("/fortunes")
def fortunes() -> str:
    return render_template("fortunes.html", fortunes=db.fortunes())


@app.get("/cached-queries")
def cached_queries() -> Response:
    return json_response(db.cached_worlds(target_kit.clamp_queries(request.args.get("count"))))


@app.get("/upstream")
def upstream() -> Response:
    """benchlab's own test (not TechEmpower's): one call to the upstream, its JSON returned."""
    body = upstream_client.wait(target_kit.clamp_wait_ms(request.args.get("ms")))
    return Response(body, content_type="application/json")


INFO = target_kit.Info(db.WORKERS)
INFO.static["upstream"] = upstream_client.describe()


@app.get("/benchlab/info")
def benchlab_info() -> Response:
    """What ran and what it costs, so the loadgen need not see the server's processes."""
    return json_response(INFO.payload())


# benchlab's own routes test (not TechEmpower's): registered after every other route.
many_routes.add_fast(app)
