"""Request-head limits and a head-read timeout for Uvicorn's httptools protocol.

Uvicorn 0.54 bounds neither with httptools (``h11_max_incomplete_event_size`` applies to h11
only, and this target measures httptools): a 64 MB header got a 200, and a client sending a
header byte every few seconds held its connection forever. The same limits as gunicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import head_limit
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_REQUEST_LINE = 8190  # bytes of the request target, as gunicorn's limit_request_line
MAX_FIELDS = 100  # header fields, as gunicorn's limit_request_fields
MAX_HEAD = head_limit.MAX_HEAD  # bytes read of a head still arriving; of a complete one, target plus names and values
HEAD_TIMEOUT_S = 10  # from a head's first byte (or the connection's start) to its end
SWEEP_S = 1  # how often the worker's sweep looks for heads older than that


class HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops, uvicorn calls send_400_response."""


class HeadSweep:
    """One timer per worker for every connection's head timeout, not one per request.

    A timer armed when a head starts and cancelled when it ends cost about 11 us of server CPU
    per /json request: 123 us against 112 us (2 workers, 256 connections; TFB's plain Uvicorn
    app took 114 us). Instead a head notes the sweep's tick when it starts, and the sweep, once
    a second, closes every connection whose head began more than HEAD_TIMEOUT_S ticks ago: a
    slow head is dropped after 10 to 11 s.
    """

    def __init__(self) -> None:
        self.tick = 0
        self.connections: set[LimitedHttpToolsProtocol] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, conn: LimitedHttpToolsProtocol) -> None:
        self.connections.add(conn)
        if self.timer is None:
            self.timer = conn.loop.call_later(SWEEP_S, self.sweep, conn.loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tick += 1
        oldest = self.tick - HEAD_TIMEOUT_S // SWEEP_S
        for conn in [c for c in self.connections if c.head_since is not None and c.head_since < oldest]:
            conn.head_timed_out()
        self.timer = loop.call_later(SWEEP_S, self.sweep, loop) if self.connections else None


SWEEP = HeadSweep()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that answers 414/431 to oversized heads and drops slow ones.

    Bytes of a head still being parsed are counted per read, so a head that never ends is cut
    at MAX_HEAD plus one read; a complete head is measured exactly at its end.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unparsed = 0  # bytes read since the last head or body chunk was parsed
        self.refusal = 400
        self.head_since: int | None = None  # SWEEP's tick when the head now being read began

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_since = SWEEP.tick
        SWEEP.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        SWEEP.connections.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_since is None:
            self.head_since = SWEEP.tick
        self.unparsed += len(data)
        if self.unparsed > MAX_HEAD:
            self.refusal = 431
            self.send_400_response("Request header fields too large.")
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        # Summed here, not in an on_header override: a Python call per header field was about
        # 5,000 of the 13,000 instructions this class added to a /json request with three header
        # fields (callgrind, one worker; the stock protocol takes 116,000).
        size = len(self.url)
        if size > MAX_REQUEST_LINE:
            self.refusal = 414
            raise HeadTooLarge
        for name, value in self.headers:
            size += len(name) + len(value)
        if len(self.headers) > MAX_FIELDS or size > MAX_HEAD:
            self.refusal = 431
            raise HeadTooLarge
        self.head_since, self.unparsed = None, 0  # the next head starts afresh
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.unparsed = 0
        super().on_body(body)

    def send_400_response(self, msg: str) -> None:
        """Uvicorn's error response, with the status a limit calls for; the connection closes."""
        if self.refusal == 400:
            super().send_400_response(msg)
            return
        body = b"Request-URI too long." if self.refusal == 414 else b"Request header fields too large."
        head = [STATUS_LINE[self.refusal]]
        head += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
        head.append(b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body))
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.transport.close()

    def head_timed_out(self) -> None:
        """A head not complete in time: close without an answer, as gunicorn and hypercorn do."""
        self.head_since = None
        if not self.transport.is_closing():
            self.transport.close()
