"""benchlab's own upstream test (not TechEmpower's): the upstream service itself, and every
target facing an upstream that is dead, frozen or slow.

Each failure is caused for real: the upstream process stopped (dead: connections refused),
stopped by SIGSTOP (frozen: the kernel still accepts, nothing answers, as `docker pause`), or
told to add seconds to every wait (slow). A target must answer 503 (dead) or 504 (frozen, slow)
within its bound, the wait plus target_kit.UPSTREAM_GRACE_S, never hang, and serve /upstream
again once the upstream is back, on every worker.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import httpx
import pytest
from helpers import serving

from benchlab.harness import NativeLab, repo_root
from benchlab.sampling import StepSampler
from benchlab.target_kit import UPSTREAM_GRACE_S
from benchlab.targets import Target, load_targets
from benchlab.upstream import Upstream, start_upstream
from benchlab.verification import verify_targets

DOWN_ANSWER_S = 3.0  # a refused connection is answered at once: well inside this
SLACK_S = 2.5  # a busy shared machine's scheduling on top of a timeout
RECOVER_S = 30.0
BURST = 32  # new connections at once: enough that every worker of a target gets some


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The upstream service alone, on a free port, as the harness starts it."""
    running = start_upstream(repo_root(), tmp_path_factory.mktemp("upstream"), None, log=lambda _: None)
    try:
        yield running
    finally:
        running.down()


def _raw(upstream: Upstream, request: bytes, timeout_s: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_upstream_waits_and_counts(upstream: Upstream) -> None:
    client = upstream.client
    client.reset()
    started = time.monotonic()
    resp = httpx.get(upstream.url + "/", params={"ms": "120"}, timeout=5)
    took = time.monotonic() - started
    assert resp.json() == {"upstream": "benchlab", "ms": 120}
    assert took >= 0.120
    for junk in ("", "foo", "-3"):
        assert httpx.get(upstream.url + "/", params={"ms": junk}, timeout=5).json()["ms"] == 0
    stats = client.stats()
    assert stats["requests"] == 4
    assert stats["cpu_seconds"] > 0


def test_upstream_answers_pipelined_requests_in_order(upstream: Upstream) -> None:
    """A longer wait first: the shorter one behind it is held back, not sent ahead of it."""
    request = b"GET /?ms=150 HTTP/1.1\r\nHost: x\r\n\r\nGET /?ms=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = _raw(upstream, request)
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.index(b'"ms":150') < raw.index(b'"ms":0')


def test_a_repeated_request_is_answered_alike_and_a_slow_upstream_still_slows_it(upstream: Upstream) -> None:
    """A client sends the same bytes for the same URL: the upstream's repeat path must answer, count
    and wait exactly as its first parse did, slow mode included."""
    request = b"GET /?ms=30 HTTP/1.1\r\nHost: x\r\nUser-Agent: repeat\r\n\r\n"
    upstream.client.reset()
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=5) as sock:
        took = []
        for slow_ms in (0, 0, 200, 0):
            httpx.put(upstream.url + "/slow", params={"ms": slow_ms}, timeout=5).raise_for_status()
            started = time.monotonic()
            sock.sendall(request)
            answer = sock.recv(65536)
            took.append(time.monotonic() - started)
            assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"upstream":"benchlab","ms":30}')
    assert upstream.client.stats()["requests"] == 4
    assert min(took) >= 0.030 and took[2] >= 0.230 > max(took[:2] + took[3:])


def test_upstream_refuses_malformed_requests(upstream: Upstream) -> None:
    assert _raw(upstream, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(upstream, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000).startswith(b"HTTP/1.1 431 ")
    assert httpx.get(upstream.url + "/elsewhere", timeout=5).status_code == 404


def test_step_sampler_reads_the_upstreams_cpu(upstream: Upstream) -> None:
    """A waiting step samples the upstream like the database: its CPU from its own /stats."""
    sampler = StepSampler(None, upstream_url=upstream.url, interval_s=0.2).start()
    with httpx.Client() as client:
        for _ in range(200):
            client.get(upstream.url + "/", params={"ms": "0"})
    samples = sampler.stop()
    assert samples.upstream_cpu_cores is not None and 0 < samples.upstream_cpu_cores < 1.5
    assert samples.upstream_bound == (samples.upstream_cpu_cores >= 0.5)


def _get(client: httpx.Client, target: Target, path: str) -> tuple[str, float, httpx.Response]:
    started = time.monotonic()
    resp = client.get(target.url + path)
    return target.name, time.monotonic() - started, resp


def _all_at_once(lab: NativeLab, path: str, timeout_s: float) -> list[tuple[str, float, httpx.Response]]:
    """``path`` on every target at the same time, one connection each."""
    targets = [rt.target for rt in lab.running.values()]
    limits = httpx.Limits(max_connections=len(targets))
    with httpx.Client(timeout=timeout_s, limits=limits) as client, ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(lambda t: _get(client, t, path), targets))


def _assert_recovers(lab: NativeLab) -> None:
    """/upstream works again on every target and every worker (BURST new connections each)."""
    for rt in lab.running.values():
        deadline = time.monotonic() + RECOVER_S
        status = 0
        while time.monotonic() < deadline:
            status = httpx.get(rt.target.url + "/upstream?ms=0", timeout=10).status_code
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"{rt.target.name} did not recover: {status}"
        with (
            httpx.Client(timeout=10, headers={"Connection": "close"}) as client,
            ThreadPoolExecutor(16) as pool,
        ):
            url = rt.target.url + "/upstream?ms=5"
            burst = list(pool.map(lambda u: client.get(u).status_code, [url] * BURST))
        assert burst == [200] * BURST, f"{rt.target.name} after recovery: {sorted(set(burst))}"


def test_dead_upstream_gives_quick_503_then_recovers(lab: NativeLab) -> None:
    assert lab.upstream is not None
    _assert_recovers(lab)  # every pool holds kept-alive connections the stop will break
    lab.upstream.down()
    try:
        answers = _all_at_once(lab, "/upstream?ms=20", DOWN_ANSWER_S + 5)
        for rt in lab.running.values():
            assert httpx.get(rt.target.url + "/json", timeout=5).status_code == 200, rt.target.name
    finally:
        lab.upstream.up()
    for name, took, resp in answers:
        print(f"dead upstream: {name}: {resp.status_code} after {took:.2f} s")
    for name, took, resp in answers:
        assert resp.status_code == 503, f"{name}: {resp.status_code} {resp.text[:100]}"
        assert resp.json() == {"error": "upstream unavailable"}, name
        assert took < DOWN_ANSWER_S, f"{name}: 503 after {took:.2f} s"
    _assert_recovers(lab)


def test_frozen_upstream_gives_504_within_the_bound_then_recovers(lab: NativeLab) -> None:
    assert lab.upstream is not None
    _assert_recovers(lab)
    bound = 0.02 + UPSTREAM_GRACE_S
    lab.upstream.freeze()
    try:
        answers = _all_at_once(lab, "/upstream?ms=20", bound + SLACK_S + 5)
        for rt in lab.running.values():
            assert httpx.get(rt.target.url + "/json", timeout=5).status_code == 200, rt.target.name
    finally:
        lab.upstream.thaw()
    for name, took, resp in answers:
        print(f"frozen upstream: {name}: {resp.status_code} after {took:.2f} s")
    for name, took, resp in answers:
        assert resp.status_code == 504, f"{name}: {resp.status_code} {resp.text[:100]}"
        assert resp.json() == {"error": "upstream timeout"}, name
        assert bound - 0.5 <= took < bound + SLACK_S, f"{name}: 504 after {took:.2f} s, bound {bound:.2f} s"
    _assert_recovers(lab)


def test_slow_upstream_gives_504_within_the_bound_then_recovers(lab: NativeLab) -> None:
    assert lab.upstream is not None
    bound = 0.05 + UPSTREAM_GRACE_S
    lab.upstream.client.slow(int((UPSTREAM_GRACE_S + 3) * 1000))
    try:
        answers = _all_at_once(lab, "/upstream?ms=50", bound + SLACK_S + 5)
    finally:
        lab.upstream.client.slow(0)
    for name, took, resp in answers:
        print(f"slow upstream: {name}: {resp.status_code} after {took:.2f} s")
    for name, took, resp in answers:
        assert resp.status_code == 504, f"{name}: {resp.status_code} {resp.text[:100]}"
        assert bound - 0.5 <= took < bound + SLACK_S, f"{name}: 504 after {took:.2f} s, bound {bound:.2f} s"
    _assert_recovers(lab)


def test_info_records_the_upstream_client_and_pool(lab: NativeLab) -> None:
    for rt in lab.running.values():
        info = httpx.get(rt.target.url + "/benchlab/info", timeout=5).json()
        client = info.get("upstream", {})
        assert client.get("client") and client.get("pool", 0) >= 4096, f"{rt.target.name}: {client}"


def test_upstream_log_dir_is_the_labs(lab: NativeLab) -> None:
    assert lab.upstream is not None and Path(lab.upstream.log_path).parent == lab.log_dir


def test_sync_fastapi_records_thread_and_database_pools(lab: NativeLab) -> None:
    """fastapi-uvicorn-sync: AnyIO's thread pool (FastAPI's default, 40) and one connection per thread."""
    if "fastapi-uvicorn-sync" not in lab.running:
        pytest.skip("fastapi-uvicorn-sync not among BENCHLAB_TEST_TARGETS")
    info = httpx.get(lab.running["fastapi-uvicorn-sync"].target.url + "/benchlab/info", timeout=5).json()
    assert info["threads"] == 40
    assert info["db_pool"] == 40


class NoWaitHandler(BaseHTTPRequestHandler):
    """Answers /upstream with the right body at once, never calling the upstream: a cheat the
    verifier must catch by time and by the upstream's count."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        ms = parse_qs(urlsplit(self.path).query).get("ms", [""])[0]
        try:
            wait = max(0, min(int(ms), 10_000))
        except ValueError:
            wait = 20
        body = json.dumps({"upstream": "benchlab", "ms": wait}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_verifier_catches_a_target_that_does_not_wait(upstream: Upstream) -> None:
    with serving(NoWaitHandler) as url:
        cheat = replace(load_targets()[0], name="cheat", url=url)
        (check,) = verify_targets([cheat], ["upstream"], None, timeout_s=5, upstream_url=upstream.url)
    reasons = " | ".join(check.reasons)
    assert check.status == "fail", reasons
    # the 10 s case: a busy machine can make a cheat's answer to ms=50 take 50 ms, never 10 s
    assert "before the 10000 ms wait was over" in reasons
    assert "the upstream saw 0 requests for 10 calls" in reasons


LATE_MS = 10


class LateHandler(NoWaitHandler):
    """Calls the upstream once per /upstream, as a target must, then sleeps LATE_MS more: a stack
    that adds more than the verifier's 5 ms to every wait."""

    upstream_url = ""
    disable_nagle_algorithm = True  # its head and body are two writes: no waiting for an ACK between them

    def do_GET(self) -> None:
        ms = parse_qs(urlsplit(self.path).query).get("ms", ["20"])[0]
        with urlopen(f"{self.upstream_url}/?ms={ms}", timeout=15) as resp:  # no TLS set-up, unlike httpx.get
            resp.read()
        time.sleep(LATE_MS / 1000)
        super().do_GET()


def test_verifier_times_low_concurrency_calls_and_fails_a_stack_that_adds_too_much(upstream: Upstream) -> None:
    """Every other check passes (the wait, one upstream call per call); the best of five calls at
    one connection takes 20 + LATE_MS ms and more, over the 25 ms allowed. On a machine busy
    while the calls ran that is a warning saying so, never a pass."""
    LateHandler.upstream_url = upstream.url
    with serving(LateHandler) as url:
        late = replace(load_targets()[0], name="late", url=url)
        (check,) = verify_targets([late], ["upstream"], None, timeout_s=15, upstream_url=upstream.url)
    reasons = " | ".join(check.reasons)
    assert "at best of 5 sequential calls, expected at most 25 ms on an idle machine" in reasons, reasons
    best = float(reasons.split("/upstream?ms=20: ")[1].split(" ms at best")[0])
    assert 20 + LATE_MS <= best < 20 + LATE_MS + 15
    if check.status == "warn":
        assert "not judged: this machine is busy" in reasons and "CPUs in use" in reasons
    else:
        assert check.status == "fail"
