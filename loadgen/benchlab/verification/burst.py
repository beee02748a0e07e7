"""TFB's burst for query counting: 512 clients at once, each sending a test's request once on
its own connection, outcomes counted."""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import urlsplit

from benchlab.contract import TestType

BURST = 512  # TFB's concurrency for query counting


def request_bytes(base_url: str, spec: TestType, value: str | None) -> bytes:
    """``spec``'s request (method, headers, body) as raw HTTP/1.1, closing the connection after it."""
    head = [f"{spec.method} {spec.path_for(value)} HTTP/1.1", f"Host: {urlsplit(base_url).netloc}", "Connection: close"]
    head += [f"{name}: {v}" for name, v in spec.headers().items()]
    if spec.body is not None:
        head.append(f"Content-Length: {len(spec.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (spec.body or b"")


async def burst(base_url: str, request: bytes, timeout_s: float) -> Counter[str]:
    """BURST concurrent requests, one connection each; outcomes counted ("200", "status 503", errors).

    Plain asyncio streams rather than httpx: httpx's pool slows down sharply at hundreds of
    connections (512 GET /json took 14 s here, against 0.5 s this way).
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    outcomes = await asyncio.gather(*(_exchange(host, port, request, timeout_s) for _ in range(BURST)))
    return Counter(outcomes)


async def _exchange(host: str, port: int, request: bytes, timeout_s: float) -> str:
    """One request on its own connection, read to the end; "200", "status N" or what went wrong."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
                await reader.read()  # to EOF: the server has finished the request
            finally:
                writer.close()
    except TimeoutError:
        return f"no response within {timeout_s:g} s"
    except OSError as exc:
        return type(exc).__name__
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return "malformed response"
    return "200" if parts[1] == b"200" else f"status {parts[1].decode()}"
