"""The seven TechEmpower tests as a plain WSGI callable, no framework: the server's own ceiling.

The database side is db.py's, the very code the Flask app (app.py) runs, so the gap between
the two targets is Flask's routing, request and response handling alone. Here: a dict from
PATH_INFO to a handler, QUERY_STRING read for one parameter, orjson, and the fortunes page
from the same template, rendered by Jinja2 directly. The server adds Server and Date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import many_routes
import orjson
import target_kit
import upstream_client
from jinja2 import Environment, FileSystemLoader

import db

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
Reply = tuple[str, str, bytes]  # status line, content type, body

JSON = "application/json"
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"), autoescape=True)
FORTUNES = TEMPLATES.get_template("fortunes.html")
INFO = target_kit.Info(db.WORKERS)
INFO.static["upstream"] = upstream_client.describe()


def param(environ: Environ, name: str) -> str | None:
    """The first value of ``name`` in the query string (percent-decoded), None if absent."""
    for pair in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


def json_test(environ: Environ) -> Reply:
    return "200 OK", JSON, orjson.dumps({"message": "Hello, World!"})


def plaintext(environ: Environ) -> Reply:
    return "200 OK", "text/plain", b"Hello, World!"


def single_query(environ: Environ) -> Reply:
    return "200 OK", JSON, orjson.dumps(db.one_world())


def multiple_queries(environ: Environ) -> Reply:
    return "200 OK", JSON, orjson.dumps(db.worlds(target_kit.clamp_queries(param(environ, "queries"))))


def updates(environ: Environ) -> Reply:
    return "200 OK", JSON, orjson.dumps(db.update_worlds(target_kit.clamp_queries(param(environ, "queries"))))


def fortunes(environ: Environ) -> Reply:
    return "200 OK", "text/html; charset=utf-8", FORTUNES.render(fortunes=db.fortunes()).encode()


def cached_queries(environ: Environ) -> Reply:
    return "200 OK", JSON, orjson.dumps(db.cached_worlds(target_kit.clamp_queries(param(environ, "count"))))


def upstream(environ: Environ) -> Reply:
    """benchlab's own test (not TechEmpower's): one call to the upstream, its JSON returned."""
    return "200 OK", JSON, upstream_client.wait(target_kit.clamp_wait_ms(param(environ, "ms")))


def benchlab_info(environ: Environ) -> Reply:
    """What ran and what it costs, so the loadgen need not see the server's processes."""
    return "200 OK", JSON, orjson.dumps(INFO.payload())


ROUTES: dict[str, Callable[[Environ], Reply]] = {
    "/json": json_test,
    "/plaintext": plaintext,
    "/db": single_query,
    "/queries": multiple_queries,
    "/updates": updates,
    "/fortunes": fortunes,
    "/cached-queries": cached_queries,
    "/upstream": upstream,
    "/benchlab/info": benchlab_info,
}
NOT_FOUND: Reply = ("404 Not Found", "text/plain", b"Not Found")
NOT_ALLOWED: Reply = ("405 Method Not Allowed", "text/plain", b"Method Not Allowed")
UNAVAILABLE: Reply = ("503 Service Unavailable", JSON, db.UNAVAILABLE)


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    handler = ROUTES.get(path)
    extra: list[tuple[str, str]] = []
    if handler is None and environ["REQUEST_METHOD"] == "GET" and (hit := many_routes.parse(path)):
        status, content_type, body = "200 OK", JSON, orjson.dumps({"route": hit[0], "id": hit[1]})  # routes test
    elif handler is None:
        status, content_type, body = NOT_FOUND
    elif environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
        status, content_type, body = NOT_ALLOWED
        extra.append(("Allow", "GET, HEAD"))
    else:
        try:
            status, content_type, body = handler(environ)
        except db.DB_ERRORS:
            status, content_type, body = UNAVAILABLE
        except upstream_client.UPSTREAM_ERRORS as exc:
            status, content_type, body = exc.status, JSON, exc.body
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra])
    return [body]
