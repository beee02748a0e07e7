"""Hostile clients and a killed launcher, against the real servers.

Oversized request heads get a 4xx, never a 200 or a 5xx, and each target's documented limit
holds exactly however the head arrives (in one write, in small writes, as a slow drip); a
slowloris hold of a few hundred connections neither starves other clients nor keeps its
connections past the servers' head-read timeout; workers die with their master, and a killed
worker is replaced.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psutil
import pytest
from helpers import own_targets

from benchlab.harness import NativeLab, RunningTarget
from benchlab.head_limit import MAX_HEAD
from benchlab.targets import Target

BIG = 1024 * 1024  # far beyond every target's head limit (8 KiB to 64 KiB)
SLOW_CONNECTIONS = 200
HOLD_S = 14.0  # longer than every target's 10 s head-read timeout, with slack
DRIP_S = 2.0  # one header byte per held connection this often
P99_BOUND_S = 1.0
PROBES = 200  # /json requests per latency sample
ORPHAN_BOUND_S = 10.0  # master killed -> every worker gone and the port closed
RESPAWN_BOUND_S = 30.0


def _readable(sock: socket.socket) -> bool:
    """Whether a read would not block: poll, as select() takes no descriptor above 1023 and a
    hold of every target opens thousands."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _status_of(target: Target, head: bytes) -> int | None:
    """Send ``head`` in pieces, reading as soon as the server answers (it may stop reading and
    close early); the status code, or None if the connection ended without one."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        for start in range(0, len(head), 16384):
            try:
                sock.sendall(head[start : start + 16384])
            except OSError:
                break
            if _readable(sock):
                break
        try:
            line = sock.recv(128).split(b"\r\n", 1)[0]
        except OSError:
            return None
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None


def test_oversized_header_is_refused(target: Target) -> None:
    head = b"GET /json HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * BIG + b"\r\n\r\n"
    status = _status_of(target, head)
    print(f"{target.name}: 1 MiB header -> {status}")
    assert status is not None and 400 <= status < 500, f"{target.name}: {status}"


def test_oversized_request_line_is_refused(target: Target) -> None:
    head = b"GET /json?pad=" + b"a" * BIG + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status = _status_of(target, head)
    print(f"{target.name}: 1 MiB request line -> {status}")
    assert status is not None and 400 <= status < 500, f"{target.name}: {status}"


# How a head may arrive: (piece size, pause between pieces); None sends it in one write, as curl.
# The limits must not depend on it: a head that arrives whole is parsed in one read, where a
# server's bound on a head still arriving never looks (h11's, hyper's).
WAYS = {"one write": (None, 0.0), "small writes": (512, 0.0), "slow drip": (2048, 0.02)}
OVER = (70_000, 100_000)  # bytes in one field: beyond the whole-head limit and gunicorn's 8190 per field


def _head(size: int, fields: int) -> bytes:
    """A keep-alive GET /json head of exactly ``size`` bytes, its padding spread over ``fields``."""
    start, names = b"GET /json HTTP/1.1\r\nHost: x\r\n", [b"X-Pad-%d: " % i for i in range(fields)]
    pad = size - len(start) - sum(len(n) + 2 for n in names) - 2
    lines = [n + b"a" * (pad // fields + (i < pad % fields)) + b"\r\n" for i, n in enumerate(names)]
    head = b"".join([start, *lines, b"\r\n"])
    assert len(head) == size
    return head


def _answer(
    target: Target, head: bytes, piece: int | None, pause: float, *, until_closed: bool = True
) -> tuple[int | None, bool]:
    """Send ``head`` one of the WAYS, stopping once the server answers; its status (None if none)
    and, ``until_closed``, whether it then closed the connection (else False)."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece its own segment
        step = piece or len(head)
        for start in range(0, len(head), step):
            try:
                sock.sendall(head[start : start + step])
            except OSError:
                break
            if _readable(sock):
                break
            time.sleep(pause)
        status = None
        try:
            answer = sock.recv(65536)
            line = answer.split(b"\r\n", 1)[0].split()
            status = int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else None
            if not until_closed:
                return status, False
            sock.settimeout(5)
            while answer:
                answer = sock.recv(65536)
        except TimeoutError:
            return status, False
        except OSError:  # reset
            return status, True
    return status, True


def _bounds_whole_head(target: Target) -> bool:
    """README's table: gunicorn's own WSGI workers bound each field and the field count, not the
    whole head; every other target bounds the whole head at 64 KiB."""
    return not (target.server == "gunicorn" and target.interface == "wsgi")


@pytest.mark.parametrize("size", OVER)
@pytest.mark.parametrize("way", WAYS)
def test_head_over_the_limit_is_refused_however_it_arrives(target: Target, way: str, size: int) -> None:
    """One field of ``size`` bytes: over every target's limit, 431 and the connection closed."""
    status, closed = _answer(target, _head(size, 1), *WAYS[way])
    print(f"{target.name}: {size} B head, {way} -> {status}, closed: {closed}")
    assert (status, closed) == (431, True), f"{target.name}: {status}, closed: {closed}"


@pytest.mark.parametrize("size", [MAX_HEAD, MAX_HEAD + 1])
@pytest.mark.parametrize("way", WAYS)
def test_whole_head_limit_holds_however_it_arrives(target: Target, way: str, size: int) -> None:
    """A head of 14 fields, each within gunicorn's per-field limit, of exactly the whole-head
    limit, then one byte more: served, then refused (431, closed) where the whole head is bounded;
    served both times where only its fields are."""
    bounded = _bounds_whole_head(target)
    status, closed = _answer(target, _head(size, 14), *WAYS[way], until_closed=bounded and size > MAX_HEAD)
    print(f"{target.name}: {size} B head in 14 fields, {way} -> {status}, closed: {closed}")
    want = (431, True) if bounded and size > MAX_HEAD else (200, False)
    assert (status, closed) == want, f"{target.name}: {status}, closed: {closed}"


def _json_p99(target: Target) -> float:
    """p99 of PROBES sequential /json requests on one keep-alive connection; all must be 200."""
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(PROBES):
            started = time.monotonic()
            assert client.get(target.url + "/json").status_code == 200, target.name
            times.append(time.monotonic() - started)
    return statistics.quantiles(times, n=100)[98]


@contextmanager
def _slowloris(targets: list[Target]) -> Iterator[dict[str, list[socket.socket]]]:
    """SLOW_CONNECTIONS connections to each target, each with an unfinished head; every socket
    closed at the end."""
    socks: dict[str, list[socket.socket]] = {t.name: [] for t in targets}
    try:
        for target in targets:
            for _ in range(SLOW_CONNECTIONS):
                sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
                sock.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                socks[target.name].append(sock)
        yield socks
    finally:
        for held in socks.values():
            for sock in held:
                sock.close()


def _closed_by_server(sock: socket.socket) -> bool:
    """A drip byte either fails or is answered by EOF/reset once the server dropped us."""
    try:
        sock.send(b"a")
        if not _readable(sock):
            return False
        return sock.recv(1024) == b""
    except OSError:
        return True


@dataclass
class Hold:
    """What one target did beside its slowloris connections."""

    p99_alone_s: float
    p99_during_s: float = 0.0
    closed: int = 0
    held_for_s: float = 0.0


@pytest.fixture(scope="module")
def holds(lab: NativeLab) -> dict[str, Hold]:
    """Every target held at once (a hold lasts the servers' 10 s head timeout, so one at a time
    would cost that per target): each target's /json p99 alone, then beside its own hold, and
    how many held connections it closed within HOLD_S."""
    targets = [rt.target for rt in lab.running.values()]
    out = {t.name: Hold(_json_p99(t)) for t in targets}
    with _slowloris(targets) as socks:
        started = time.monotonic()
        for t in targets:
            out[t.name].p99_during_s = _json_p99(t)
        closed: dict[str, set[int]] = {name: set() for name in socks}
        while time.monotonic() - started < HOLD_S and any(len(closed[n]) < len(s) for n, s in socks.items()):
            time.sleep(DRIP_S)
            for name, held in socks.items():
                closed[name] |= {i for i, sock in enumerate(held) if i not in closed[name] and _closed_by_server(sock)}
                if len(closed[name]) == len(held) and not out[name].held_for_s:
                    out[name].held_for_s = time.monotonic() - started
        for name, hold in out.items():
            hold.closed = len(closed[name])
            hold.held_for_s = hold.held_for_s or time.monotonic() - started
    return out


def test_slowloris_hold_neither_starves_nor_lasts(target: Target, holds: dict[str, Hold]) -> None:
    hold = holds[target.name]
    print(
        f"{target.name}: /json p99 {hold.p99_alone_s * 1000:.1f} ms alone, {hold.p99_during_s * 1000:.1f} ms beside "
        f"{SLOW_CONNECTIONS} slowloris connections; server closed {hold.closed} of them within {hold.held_for_s:.1f} s"
    )
    assert hold.p99_during_s < P99_BOUND_S, f"{target.name}: /json p99 {hold.p99_during_s:.2f} s during the hold"
    assert hold.closed == SLOW_CONNECTIONS, f"{target.name}: {SLOW_CONNECTIONS - hold.closed} held past {HOLD_S} s"


def _alive(pids: list[int]) -> list[int]:
    """Those still running (a zombie has exited; only its parent has not reaped it yet)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def _workers(rt: RunningTarget) -> list[int]:
    """The master's live descendants that serve: not multiprocessing's resource tracker."""
    out = []
    for proc in rt.processes():
        try:
            if proc.pid != rt.process.pid and "resource_tracker" not in " ".join(proc.cmdline()):
                out.append(proc.pid)
        except psutil.Error:  # exited, or a zombie its master has not reaped yet
            continue
    return out


def _until(condition: Callable[[], bool], bound_s: float) -> float:
    """Seconds until ``condition()`` holds, polled; the bound when it never does."""
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        if condition():
            break
        time.sleep(0.1)
    return time.monotonic() - started


def _kill_a_worker_then_the_master(rt: RunningTarget) -> None:
    name = rt.target.name
    workers = _workers(rt)
    assert workers, f"{name}: no workers"
    os.kill(workers[0], signal.SIGKILL)
    replaced = _until(
        lambda: rt.process.poll() is None and len(_alive(_workers(rt))) >= len(workers) and rt.target.answers(),
        RESPAWN_BOUND_S,
    )
    print(f"{name}: worker {workers[0]} killed, target whole again after {replaced:.1f} s")
    assert rt.process.poll() is None, f"{name}: the master exited after one worker died: {rt.log_tail()}"
    assert replaced < RESPAWN_BOUND_S, f"{name}: no replacement worker: {rt.log_tail()}"

    descendants = [p.pid for p in rt.processes() if p.pid != rt.process.pid]
    frozen = _alive(_workers(rt))[0]
    os.kill(frozen, signal.SIGSTOP)  # a worker that cannot run a graceful stop must die with its master too
    rt.process.kill()  # SIGKILL to the master alone
    rt.process.wait()
    gone = _until(lambda: not _alive(descendants) and not rt.target.answers(timeout_s=0.5), ORPHAN_BOUND_S)
    print(f"{name}: worker {frozen} frozen, master killed, {len(descendants)} children gone and port closed "
          f"after {gone:.1f} s")  # fmt: skip
    assert not _alive(descendants), f"{name}: {_alive(descendants)} outlived their master"
    assert not rt.target.answers(timeout_s=0.5), f"{name}: port still answers"


def test_killed_worker_is_replaced_and_workers_die_with_master() -> None:
    with NativeLab(own_targets()) as lab:
        for rt in lab.running.values():
            _kill_a_worker_then_the_master(rt)
