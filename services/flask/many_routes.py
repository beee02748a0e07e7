"""benchlab's own ``routes`` test (not TechEmpower's): 1,000 parameterised routes, registered
after an app's TechEmpower routes in Flask's normal way (``add_url_rule`` with an ``int``
converter), ``/r0/<item_id>`` to ``/r999/<item_id>``, each answering ``{"route": n, "id": item_id}``.

Werkzeug compiles an app's rules into one state machine, so the 1,000th rule should cost about
what the first does: the test measures whether it does.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from flask import Flask, Response

ROUTES = 1_000


def add_fast(app: Flask) -> None:
    """The TechEmpower-style app's way: the body built as bytes (orjson)."""

    def view(n: int) -> Callable[[int], Response]:
        def route(item_id: int) -> Response:
            return Response(orjson.dumps({"route": n, "id": item_id}), content_type="application/json")

        return route

    for n in range(ROUTES):
        app.add_url_rule(f"/r{n}/<int:item_id>", endpoint=f"r{n}", view_func=view(n))


def add_idiomatic(app: Flask) -> None:
    """As Flask's docs teach: a view returning a dict, serialised by Flask's JSON provider."""

    def view(n: int) -> Callable[[int], dict[str, int]]:
        def route(item_id: int) -> dict[str, int]:
            return {"route": n, "id": item_id}

        return route

    for n in range(ROUTES):
        app.add_url_rule(f"/r{n}/<int:item_id>", endpoint=f"r{n}", view_func=view(n))


def parse(path: str) -> tuple[int, int] | None:
    """The bare apps' way, having no router: ``/r<n>/<id>`` split by hand; None if it is not one."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or not parts[1].startswith("r"):
        return None
    n, item = parts[1][1:], parts[2]
    if not (n.isdigit() and item.isdigit()) or int(n) >= ROUTES or str(int(n)) != n:
        return None
    return int(n), int(item)
