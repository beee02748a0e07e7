"""The lab's upstream service: what a target waits on in benchlab's own ``upstream`` test.

``GET /?ms=N`` answers ``{"upstream": "benchlab", "ms": N}`` after N milliseconds (N read
leniently: missing or bad gives 0, clamped to 0..MAX_MS). It stands for the payment provider,
microservice or LLM API a real API waits on, so it must never be the limit itself: one
process, one uvloop event loop, a protocol per connection and a timer per wait, no framework
(see README, "The upstream", for its measured cost). Requests are parsed here rather than by a
library: they come from the targets' HTTP clients (GET, no body, a few headers), and every
microsecond spent here is a microsecond the measured servers share a machine with.

Also, for the lab and its tests (never on the measured path):
- ``GET /stats``: ``{"requests": n, "cpu_seconds": s, "pid": p, "open": c}``: waits counted
  since start or the last reset, this process's CPU (the sampler's rate), open connections;
- ``DELETE /stats``: resets the request count (the verifier's one-request-per-call check);
- ``PUT /slow?ms=N``: adds N ms to every wait from now on (0 ends it): a slow upstream, for
  the tests that prove a target answers 504 within its timeout.

Environment: ``BENCHLAB_UPSTREAM_PORT`` (required), ``BENCHLAB_HOST`` (default 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import re
import resource
import signal
import socket
import sys
import time
from urllib.parse import parse_qsl

import uvloop

MAX_MS = 60_000  # a wait longer than any target's bound on it (they clamp to 10,000 ms)
BACKLOG = 16_384  # the kernel caps it at somaxconn; thousands of clients may connect at once
MAX_HEAD = 16 * 1024  # a request head longer than this is refused (431) and the connection closed
NAME = "upstream.py"
GC_THRESHOLD = 50_000
EMPTY_BODY = re.compile(rb"content-length:[ \t]*0[ \t]*(\r\n|$)")


class Stats:
    """The process's counters, shared by every connection (slots: an instance attribute is the
    cheapest thing Python can add one to)."""

    __slots__ = ("open", "requests", "slow_ms")

    def __init__(self) -> None:
        self.requests = 0
        self.open = 0
        self.slow_ms = 0


STATS = Stats()
# Whole requests already parsed to a wait, and that wait: an HTTP client sends the same bytes for
# the same URL on every call, so a repeat costs one dict lookup instead of a parse.
KNOWN: dict[bytes, int] = {}
KNOWN_MAX, KNOWN_LEN = 4096, 2048  # at most 8 MiB, whatever clients send


def _param(query: bytes, name: str) -> str | None:
    """The first ``name=`` value of a query string, percent-decoded; None if absent."""
    return dict(parse_qsl(query.decode("latin-1"))).get(name)


def wait_ms(raw: str | bytes | None) -> int:
    """A wait from ``ms=``: missing, empty or non-integer gives 0; clamped to 0..MAX_MS."""
    try:
        n = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return max(0, min(n, MAX_MS))


def response(status: str, body: bytes, keep_alive: bool = True) -> bytes:
    close = b"" if keep_alive else b"Connection: close\r\n"
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nServer: benchlab-upstream\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + close + b"\r\n" + body
    )


# The answers to the common waits, built once.
ANSWERS = {ms: response("200 OK", b'{"upstream":"benchlab","ms":%d}' % ms) for ms in range(1001)}
ANSWERS_CLOSE = {ms: response("200 OK", b'{"upstream":"benchlab","ms":%d}' % ms, False) for ms in range(1001)}


class Timers:
    """Waits grouped by the millisecond they end in, one loop timer per millisecond rather than
    one per wait. A wait ends at the first whole millisecond at or after its arrival (read from the
    clock, not the loop's cached time, which is as old as the loop's current pass) plus its length.
    Its timer is set relative to the whole millisecond that clock reading falls in, the base the
    loop's timers count from (libuv's clock is the same CLOCK_MONOTONIC, floored to milliseconds),
    so it fires at that millisecond or after: never early, and about half a millisecond late."""

    def __init__(self) -> None:
        self.due: dict[int, list[tuple[Connection, int, bytes]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, delay_ms: int, conn: Connection, seq: int, answer: bytes) -> None:
        now = time.monotonic() * 1000
        tick = math.ceil(now + delay_ms)
        waits = self.due.get(tick)
        if waits is None:
            waits = self.due[tick] = []
            loop = self.loop or asyncio.get_running_loop()
            loop.call_later((tick - math.floor(now)) / 1000, self.fire, tick)
        waits.append((conn, seq, answer))

    def fire(self, tick: int) -> None:
        for conn, seq, answer in self.due.pop(tick, ()):
            conn.answer(seq, answer)


TIMERS = Timers()


def stats_body() -> bytes:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return json.dumps({
        "requests": STATS.requests, "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 4),
        "user_seconds": round(usage.ru_utime, 4),
        "pid": os.getpid(), "open": STATS.open,
    }).encode()  # fmt: skip


class Connection(asyncio.Protocol):
    """One client connection: requests parsed as they arrive (pipelined ones too), each answered
    in request order once its wait is over. The common request (``GET /?ms=N HTTP/1.1``, kept
    alive, no body) takes a short path; anything else the general one."""

    __slots__ = ("buffer", "closing", "held", "received", "sent", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.received = 0  # requests read on this connection
        self.sent = 0  # answers written, in request order
        self.held: dict[int, bytes] = {}  # answers ready before an earlier request's
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        STATS.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        STATS.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data, self.buffer = self.buffer + data, b""
        else:
            ms = KNOWN.get(data)
            if ms is not None and not self.closing:
                seq = self.received
                self.received = seq + 1
                self.wait(seq, ms, True)
                return
        start = 0
        while not self.closing:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                rest = data[start:]
                if len(rest) > MAX_HEAD:
                    self.refuse("431 Request Header Fields Too Large")
                else:
                    self.buffer = rest
                return
            ms = self.handle(data[start:end])
            if ms is not None and start == 0 and end + 4 == len(data) <= KNOWN_LEN and len(KNOWN) < KNOWN_MAX:
                KNOWN[data] = ms
            start = end + 4

    def handle(self, head: bytes) -> int | None:
        """Answers one request; returns its wait if it took the short path (which depends only
        on the request's bytes), else None."""
        seq = self.received
        self.received += 1
        line_end = head.find(b"\r\n")
        line = head if line_end < 0 else head[:line_end]
        headers = b"" if line_end < 0 else head[line_end:].lower()
        if (
            line[:9] == b"GET /?ms=" and line[-9:] == b" HTTP/1.1" and b"connection: close" not in headers
            and b"content-length:" not in headers and b"transfer-encoding:" not in headers
        ):  # fmt: skip
            raw = line[9:-9]
            ms = min(int(raw), MAX_MS) if raw.isdigit() else wait_ms(_param(b"ms=" + raw, "ms"))
            self.wait(seq, ms, True)
            return ms
        self.handle_general(seq, line, headers)
        return None

    def wait(self, seq: int, ms: int, keep_alive: bool) -> None:
        STATS.requests += 1
        answer = (ANSWERS if keep_alive else ANSWERS_CLOSE).get(ms) or response(
            "200 OK", b'{"upstream":"benchlab","ms":%d}' % ms, keep_alive
        )
        delay = ms + STATS.slow_ms
        if delay:
            TIMERS.add(delay, self, seq, answer)
        else:
            self.answer(seq, answer)

    def handle_general(self, seq: int, line: bytes, headers: bytes) -> None:
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.refuse("400 Bad Request")
            return
        if b"transfer-encoding:" in headers or (b"content-length:" in headers and not EMPTY_BODY.search(headers)):
            self.refuse("400 Bad Request")  # nothing here takes a body
            return
        keep_alive = parts[2] == b"HTTP/1.1" and b"connection: close" not in headers
        if not keep_alive:
            self.closing = True  # no request after this one is read
        method, (path, _, query) = parts[0], parts[1].partition(b"?")
        if path == b"/" and method == b"GET":
            self.wait(seq, wait_ms(_param(query, "ms")), keep_alive)
        else:
            self.answer(seq, self.admin(method, path, query, keep_alive))

    def admin(self, method: bytes, path: bytes, query: bytes, keep_alive: bool) -> bytes:
        if path == b"/stats" and method == b"GET":
            return response("200 OK", stats_body(), keep_alive)
        if path == b"/stats" and method == b"DELETE":
            STATS.requests = 0
            return response("200 OK", stats_body(), keep_alive)
        if path == b"/slow" and method == b"PUT":
            STATS.slow_ms = wait_ms(_param(query, "ms"))
            return response("200 OK", b'{"slow_ms":%d}' % STATS.slow_ms, keep_alive)
        return response("404 Not Found", b'{"error":"not found"}', keep_alive)

    def answer(self, seq: int, answer: bytes) -> None:
        """Sends request ``seq``'s answer, and any held behind it, or holds it for an earlier one."""
        transport = self.transport
        if transport is None:
            return
        if seq != self.sent:
            self.held[seq] = answer
            return
        transport.write(answer)
        self.sent += 1
        while self.held and self.sent in self.held:
            transport.write(self.held.pop(self.sent))
            self.sent += 1
        if self.closing and self.sent == self.received:
            transport.close()

    def refuse(self, status: str) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(response(status, b'{"error":"bad request"}', keep_alive=False))
            self.transport.close()
            self.transport = None


def _raise_open_file_limit() -> None:
    """Every waiting client is a socket: the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _settings() -> tuple[str, int]:
    host = os.environ.get("BENCHLAB_HOST") or "127.0.0.1"
    raw = os.environ.get("BENCHLAB_UPSTREAM_PORT", "")
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        print(f"{NAME}: BENCHLAB_UPSTREAM_PORT must be a TCP port (1-65535), got {raw!r}", file=sys.stderr)
        raise SystemExit(2)
    return host, int(raw)


async def serve(host: str, port: int) -> None:
    loop = TIMERS.loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = await loop.create_server(Connection, host, port, family=family, backlog=BACKLOG)
    except OSError as exc:
        print(f"{NAME}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(f"{NAME}: listening on {host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    host, port = _settings()
    _raise_open_file_limit()
    # Each wait allocates a few short-lived objects: collecting the young generation every 700
    # allocations would sweep through them thousands of times a second for nothing.
    gc.set_threshold(GC_THRESHOLD)
    uvloop.run(serve(host, port))


if __name__ == "__main__":
    main()
