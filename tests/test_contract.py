"""The targets meet the TechEmpower contract: through the verifier, and byte for byte on the wire.

The wire tests read raw sockets so they do not only trust the verifier; a deliberately broken
server proves the verifier fails what is wrong instead of passing everything.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import serving

from benchlab import contract
from benchlab.harness import NativeLab
from benchlab.ports import free_port
from benchlab.targets import Target, load_targets
from benchlab.verification import ContractCheck, format_checks, verify_targets
from benchlab.verification.burst import request_bytes
from benchlab.verification.responses import fetch

STALE_CACHE = "stale cache"
BUSY = "not judged: this machine is busy"


@pytest.fixture(scope="module")
def checks(lab: NativeLab) -> list[ContractCheck]:
    """One verification of every target with the DSN (query counts included), shared by the module."""
    upstream = lab.upstream.url if lab.upstream else None
    return verify_targets([rt.target for rt in lab.running.values()], None, lab.dsn, upstream_url=upstream)


def test_verifier_passes_every_test(target: Target, checks: list[ContractCheck]) -> None:
    mine = [c for c in checks if c.target == target.name]
    assert [c.test for c in mine] == list(contract.TESTS)
    # A cache filled before earlier updates may hold old values: the verifier only warns on that.
    stale_only = [c for c in mine if c.status == "warn" and all(STALE_CACHE in r for r in c.reasons)]
    assert all(c.test == "cached-queries" for c in stale_only)
    # The upstream test's low-concurrency time is judged on an idle machine only; a busy one warns.
    busy_only = [c for c in mine if c.status == "warn" and all(BUSY in r for r in c.reasons)]
    assert all(c.test == "upstream" for c in busy_only)
    bad = [c for c in mine if c.status != "pass" and c not in stale_only + busy_only]
    assert not bad, format_checks(bad)


# --- bytes on the wire ------------------------------------------------------------------------


def _read_response(sock_file: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a socket file: status, headers (lower-case names), body."""
    status_line = sock_file.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := sock_file.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = sock_file.read(int(headers["content-length"]))
    else:
        assert headers.get("transfer-encoding", "").lower() == "chunked", headers
        body = b""
        while size := int(sock_file.readline().split(b";")[0], 16):
            body += sock_file.read(size)
            sock_file.readline()
        sock_file.readline()
    return int(status_line.split()[1]), headers, body


def raw_get(url: str, path: str, repeat: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """``repeat`` GETs of ``path`` pipelined on one connection, written as one packet."""
    u = urlsplit(url)
    request = f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode()
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(request * repeat)
        with sock.makefile("rb") as f:
            return [_read_response(f) for _ in range(repeat)]


def test_json_headers_on_the_wire(target: Target) -> None:
    [(status, headers, body)] = raw_get(target.url, "/json")
    assert status == 200
    assert headers["server"]
    assert abs(parsedate_to_datetime(headers["date"]).timestamp() - time.time()) < 5
    assert headers["content-type"] in ("application/json", "application/json; charset=utf-8")
    if target.framework == "none" and target.interface == "asgi":  # bare.py frames chunked, as TFB allows
        assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    else:
        assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"message": "Hello, World!"}


def test_plaintext_answers_16_pipelined_requests(target: Target) -> None:
    responses = raw_get(target.url, "/plaintext", repeat=16)
    assert [(s, b) for s, _, b in responses] == [(200, b"Hello, World!")] * 16
    assert all(h["content-type"].startswith("text/plain") for _, h, _ in responses)


def test_fortunes_escaped_utf8_and_extra_row(target: Target) -> None:
    [(status, headers, body)] = raw_get(target.url, "/fortunes")
    assert status == 200
    assert headers["content-type"].replace(" ", "").lower() == "text/html;charset=utf-8"
    assert b"<script>" not in body
    assert b"&lt;script&gt;alert(" in body
    assert "フレームワークのベンチマーク".encode() in body
    assert b"Additional fortune added at request time." in body


@pytest.mark.parametrize("path", ["/no-such-path", "/json/extra", "/benchlab"])
def test_unknown_paths_are_404(target: Target, path: str) -> None:
    [(status, _, _)] = raw_get(target.url, path)
    assert status == 404


@pytest.mark.parametrize(
    ("path", "rows"),
    [
        ("/queries?queries=501", 500),
        ("/queries?queries=0", 1),
        ("/queries?queries=-3", 1),
        ("/queries", 1),
        ("/updates?queries=foo", 1),
        ("/updates?queries=7", 7),
        ("/cached-queries?count=", 1),
        ("/cached-queries?count=100000", 500),
    ],
)
def test_parameter_is_clamped(target: Target, path: str, rows: int) -> None:
    [(status, _, body)] = raw_get(target.url, path)
    assert status == 200
    got = json.loads(body)
    assert len(got) == rows
    assert all(set(r) == {"id", "randomNumber"} and 1 <= r["id"] <= 10_000 for r in got)


# --- the verifier fails what is wrong ---------------------------------------------------------

FIXED_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"
BROKEN = {
    "/json": ("application/json", b'{"message": "Hello, world"}'),
    "/plaintext": ("text/plain", b"Hello, World!"),
    "/db": ("application/json", b'{"id": 1, "randomNumber": "7"}'),
    "/fortunes": ("text/html", b"<table><tr><td>11</td><td><script>alert(1)</script></td></tr></table>"),
}


class BrokenHandler(BaseHTTPRequestHandler):
    """Wrong bodies, a frozen Date (none at all on /plaintext), a charset-less fortunes page."""

    def do_GET(self) -> None:
        ctype, body = BROKEN.get(self.path, ("text/plain", b"nope"))
        self.send_response_only(200 if self.path in BROKEN else 404)
        self.send_header("Server", "broken")
        if self.path != "/plaintext":
            self.send_header("Date", FIXED_DATE)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_target() -> Iterator[Target]:
    with serving(BrokenHandler) as url:
        yield replace(load_targets()[0], name="broken", url=url)


def test_verifier_fails_a_broken_server(broken_target: Target) -> None:
    tests = ["json", "plaintext", "db", "fortunes"]
    checks = {c.test: c for c in verify_targets([broken_target], tests, None, timeout_s=5)}
    assert all(c.status == "fail" for c in checks.values()), format_checks(checks.values())
    assert all(any("Date unchanged" in r for r in c.reasons) for c in checks.values())
    reasons = {test: " | ".join(c.reasons) for test, c in checks.items()}
    assert "Hello, world" in reasons["json"]
    assert "missing Date header" in reasons["plaintext"]
    assert "randomNumber '7' is not an integer" in reasons["db"]
    assert "Content-Type 'text/html'" in reasons["fortunes"]
    assert "page differs" in reasons["fortunes"]


def test_verifier_reports_a_closed_port_quickly() -> None:
    closed = replace(load_targets()[0], name="closed", url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    checks = verify_targets([closed], None, None, timeout_s=5)
    assert time.monotonic() - started < 3
    assert len(checks) == len(contract.TESTS)
    assert all(c.status == "fail" and "connection refused" in c.reasons[0] for c in checks)


# --- a test type with a method and a body -----------------------------------------------------

ECHO_BODY = b'{"message": "Hello, World!", "n": 3}'


def _check_echo(content: bytes, rows: int) -> list[contract.Row]:
    """The echo server's account of the request must be the spec's own request."""
    seen = json.loads(content)
    want = {"method": "POST", "path": "/echo?n=3", "content_type": "application/json", "body": ECHO_BODY.decode()}
    if seen != want:
        raise contract.BodyProblem(f"server saw {seen}, expected {want}")
    return []


# Not a TFB test, and not registered: proves a POST with a JSON body is expressible end to end.
ECHO = contract.TestType(
    name="echo", path="/echo", param="n", content_type="application/json", accept=contract.ACCEPT_JSON,
    check_body=_check_echo, method="POST", body=ECHO_BODY, body_type="application/json",
)  # fmt: skip


class EchoHandler(BaseHTTPRequestHandler):
    """Answers any request with its method, path, Content-Type and body, as JSON."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        seen = {"method": self.command, "path": self.path, "content_type": self.headers.get("Content-Type"),
                "body": body.decode()}  # fmt: skip
        payload = json.dumps(seen).encode()
        self.send_response(200)  # with Server and Date, as the contract wants
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    with serving(EchoHandler) as url:
        yield url


def test_a_post_spec_builds_its_request() -> None:
    assert ECHO.name not in contract.TEST_TYPES
    assert (ECHO.method, ECHO.body) == ("POST", ECHO_BODY)
    assert ECHO.path_for(3) == "/echo?n=3"
    assert ECHO.path_for() == "/echo"
    assert ECHO.headers() == {"Accept": contract.ACCEPT_JSON, "Content-Type": "application/json"}
    with pytest.raises(ValueError, match="body"):
        replace(ECHO, body_type=None)


def test_verification_sends_the_method_and_body(echo_url: str) -> None:
    async def fetch_echo(check: ContractCheck) -> httpx.Response | None:
        async with httpx.AsyncClient() as client:
            return await fetch(client, echo_url, ECHO, check, "3", timeout_s=5)

    check = ContractCheck("echo-server", ECHO.name)
    resp = asyncio.run(fetch_echo(check))
    assert resp is not None and check.status == "pass", check.reasons
    assert ECHO.check_body(resp.content, 1) == []


def test_the_query_count_burst_sends_the_method_and_body(echo_url: str) -> None:
    u = urlsplit(echo_url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(request_bytes(echo_url, ECHO, "3"))
        with sock.makefile("rb") as f:
            status, _, body = _read_response(f)
    assert status == 200
    assert ECHO.check_body(body, 1) == []
