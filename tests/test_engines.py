"""Both load engines behind one interface send exactly the request they are given: method,
headers and body, as a server on the wire sees them (pipelined too)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest
from helpers import serving

from benchlab.engines import ENGINES, Load, Request, for_mode

BODY = b'{"message": "Hello, POST!", "n": [1, 2, 3]}'


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and pipelining, as the engines use them
    seen: ClassVar[Counter[tuple[str, str, bytes]]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.lock:
            self.seen[(self.command, self.headers.get("Content-Type") or "", body)] += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, Counter[tuple[str, str, bytes]]]]:
    _Recorder.seen = Counter()
    with serving(_Recorder) as url:
        yield url + "/echo", _Recorder.seen


def test_engines_are_registered_by_name_one_per_mode() -> None:
    modes = {"wrk": "closed", "k6": "open", "wrk-profiled": "profiled"}
    assert {name: str(cls.mode) for name, cls in ENGINES.items()} == modes
    assert {mode: for_mode(mode).name for mode in modes.values()} == {m: n for n, m in modes.items()}


@pytest.mark.parametrize(
    "mode,load",
    [
        ("closed", Load(duration_s=1, connections=2)),
        ("closed", Load(duration_s=1, connections=2, pipeline=4)),
        ("open", Load(duration_s=1, rate=20, vus=2, max_vus=4)),
    ],
    ids=["wrk", "wrk-pipelined", "k6"],
)
def test_a_post_with_a_json_body_is_sent_as_given(recorder, mode: str, load: Load) -> None:
    url, seen = recorder
    request = Request(url=url, method="POST", headers={"Content-Type": "application/json"}, body=BODY)
    m = for_mode(mode).run(request, load)
    assert m.requests > 0 and m.errors_status == 0 and m.socket_errors == 0
    assert set(seen) == {("POST", "application/json", BODY)}, seen
    # Every response the engine counted was an answer to that POST.
    assert seen[("POST", "application/json", BODY)] >= m.requests


def test_a_get_sends_no_body(recorder) -> None:
    url, seen = recorder
    m = for_mode("closed").run(Request(url=url), Load(duration_s=1, connections=2))
    assert m.requests > 0 and set(seen) == {("GET", "", b"")}
