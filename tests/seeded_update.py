"""One ``/updates`` request to an app module, in this process, with Python's ``random`` seeded
just before it; prints the status and the body. Run by tests/test_query_counts.py with a
service's own interpreter, its folder as cwd and the lab's DATABASE_URL.

Why: a new random number equal to the stored one happens once in 10,000 rows, too seldom for a
burst to hit every time. The test draws the same numbers from the same seed and stores them
first, so every row this request writes gets the value it already holds.

usage: python seeded_update.py MODULE PATH SEED
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import random
import sys
from typing import Any


def flask_get(app: Any, path: str, seed: int) -> tuple[int, bytes]:
    client = app.test_client()
    random.seed(seed)
    response = client.get(path)
    return response.status_code, response.get_data()


async def asgi_get(app: Any, path: str, seed: int) -> tuple[int, bytes]:
    """The request as a server hands it to the app, inside the app's own lifespan."""
    route, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": route, "raw_path": route.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        random.seed(seed)
        await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def main() -> None:
    module, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path[0] = os.getcwd()  # the service's folder, as its server imports it (not tests/)
    if importlib.util.find_spec("gevent") is not None:
        # The WSGI apps run under gunicorn's gevent worker, which patches before importing them
        # (the idiomatic app's first connections deadlock on SQLAlchemy's lock otherwise).
        from gevent import monkey

        monkey.patch_all()
    app = importlib.import_module(module).app
    if hasattr(app, "test_client"):
        status, body = flask_get(app, path, seed)
    else:
        status, body = asyncio.run(asgi_get(app, path, seed))
    print(status)
    print(body.decode())


if __name__ == "__main__":
    main()
