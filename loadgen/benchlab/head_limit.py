"""The request-head limit that Hypercorn and Granian lack for a head that arrives whole: thin
ASGI and WSGI wrappers, 431 and close before the app runs.

Part of the target kit beside ``target_kit.py`` (each image copies both in; native runs put
both on the server's ``PYTHONPATH``), so it imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The whole request head (request line and header lines), in bytes, where a target bounds it: a
# head still arriving by Uvicorn's protocol (http_limits.py), Hypercorn's h11 or Granian's hyper;
# one that arrived whole, in one read (unchecked by h11 and hyper), by the two classes below.
MAX_HEAD = 64 * 1024
HEAD_TOO_LARGE = b"Request header fields too large."
_LINE_ENDS = len(" ") + len(" HTTP/1.1\r\n") + len("\r\n")  # the request line's fixed bytes, the blank line
_FIELD_ENDS = len(": \r\n")  # a header line's bytes besides its name and value
_HTTP_FIELD_ENDS = _FIELD_ENDS - len("HTTP_")  # WSGI's key for a field is its name after HTTP_


class AsgiHeadLimit:
    """431 and close for a head over MAX_HEAD, before the app runs, counted from the head the
    server parsed as a plain client sends it. For Hypercorn and Granian, which have no setting
    for a complete head: 70,000 and 100,000 bytes sent in one write, as curl sends them, got 200."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope["query_string"]
            size = len(scope["method"]) + len(scope.get("raw_path") or scope["path"]) + _LINE_ENDS
            size += len(query) + 1 if query else 0
            headers = scope["headers"]
            size += _FIELD_ENDS * len(headers)
            for name, value in headers:
                size += len(name) + len(value)
            if size > MAX_HEAD:
                refusal = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
                await send({"type": "http.response.start", "status": 431, "headers": refusal})
                await send({"type": "http.response.body", "body": HEAD_TOO_LARGE})
                return
        await self.app(scope, receive, send)


class WsgiHeadLimit:
    """AsgiHeadLimit for WSGI (Flask under Granian). WSGI's head is decoded (the path unescaped,
    repeated fields joined), so the count can fall that much short of the bytes sent.

    Granian's environ holds the whole process environment, then its CGI and WSGI keys, then the
    header fields: walked from the end, only the fields are visited (walking all of a 46-key
    environ cost 70,000 instructions per request, callgrind; this about 4,000). The pinned
    Granian's order, which tests/test_hostile.py's exact limit would catch changing."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        query = environ.get("QUERY_STRING", "")
        size = len(environ["REQUEST_METHOD"]) + len(environ.get("PATH_INFO", "")) + _LINE_ENDS
        size += len(query) + 1 if query else 0
        for key, value in reversed(environ.items()):
            if key[:5] == "HTTP_":
                size += len(key) + len(value) + _HTTP_FIELD_ENDS
            elif key[:8] == "CONTENT_":
                size += len(key) + len(value) + _FIELD_ENDS
            else:
                break
        if size <= MAX_HEAD:
            return self.app(environ, start_response)
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
        start_response("431 Request Header Fields Too Large", headers)
        return [HEAD_TOO_LARGE]
