"""A trivial HTTP server that answers every request with a fixed "Hello, World!".

It is the yardstick for the load generator: whatever rate wrk or k6 reach against it on
the targets' CPUs is the most this machine's client can show, so a target measured close
to it is limited by the client, not by itself. One asyncio+uvloop process per worker,
each with its own SO_REUSEPORT listening socket so the kernel spreads connections.
Requests are counted by their blank-line terminator, which makes pipelining safe;
request bodies are not supported (the lab only sends GETs). Like every target it answers
``GET /benchlab/info`` with its process tree's CPU seconds and RSS, so calibration and the
sampler's tests see it the way they see a target.

Run: ``python -m benchlab.baseline --port 0 --workers 2 [--cpus 0,1]``; it prints
``READY <port>`` once every worker listens, and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from email.utils import formatdate
from types import TracebackType
from typing import IO

from benchlab.errors import BenchlabError
from benchlab.target_kit import Info

BODY = b"Hello, World!"
INFO = b"GET /benchlab/info "
MAX_PENDING = 64 * 1024  # bytes of a request without its end: a client sending junk


def _response() -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Server: benchlab-baseline\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


def _info(info: Info) -> bytes:
    """The ``/benchlab/info`` answer: what the sampler reads from every target."""
    body = json.dumps(info.payload()).encode()
    return (
        b"HTTP/1.1 200 OK\r\nServer: benchlab-baseline\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class _Hello(asyncio.Protocol):
    """Answers each complete request head; keeps a partial one until its end arrives."""

    response = _response()
    info: Info

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        buf = self.pending + data
        n = buf.count(b"\r\n\r\n")
        if n and INFO in buf:
            heads = buf.split(b"\r\n\r\n")
            self.transport.write(b"".join(_info(self.info) if INFO in h else _Hello.response for h in heads[:-1]))
            buf = heads[-1]
        elif n:
            self.transport.write(_Hello.response * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
        if len(buf) > MAX_PENDING:
            self.transport.close()
        self.pending = buf


def _tick_date(loop: asyncio.AbstractEventLoop) -> None:
    """The Date header must change over time (TFB checks it); refresh it every second."""
    _Hello.response = _response()
    loop.call_later(1.0, _tick_date, loop)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, cpus: set[int] | None, ready_fd: int, workers: int) -> None:
    """One server process: its own REUSEPORT socket, its own event loop, forever."""
    import uvloop

    if cpus:
        os.sched_setaffinity(0, cpus)
    _Hello.info = Info(workers)  # after pinning: it reports the CPUs this worker may use
    sock = _listen(host, port)
    sock.listen(4096)
    sock.setblocking(False)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        _tick_date(loop)
        server = await loop.create_server(_Hello, sock=sock)
        os.write(ready_fd, b"r")
        os.close(ready_fd)
        await server.serve_forever()

    uvloop.run(serve())


def serve(host: str, port: int, workers: int, cpus: set[int] | None) -> None:
    """Forks the workers, prints ``READY <port>``, and stops them all on SIGTERM/SIGINT."""
    reserve = _listen(host, port)  # holds the port (bound, not listening) while workers join
    port = reserve.getsockname()[1]
    read_fd, write_fd = os.pipe()
    os.environ["BENCHLAB_MASTER_PID"] = str(os.getpid())  # target_kit reports the whole tree
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            reserve.close()
            code = 0
            try:
                _worker(host, port, cpus, write_fd, workers)
            except BaseException as exc:  # the master only sees a missing "ready": say why here
                if not isinstance(exc, KeyboardInterrupt | SystemExit):
                    print(f"baseline: worker {os.getpid()} failed: {type(exc).__name__}: {exc}",
                          file=sys.stderr, flush=True)  # fmt: skip
                    code = 1
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write_fd)
    got = b""
    while len(got) < workers:
        chunk = os.read(read_fd, workers)
        if not chunk:
            break
        got += chunk
    reserve.close()

    def stop(*_: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if len(got) < workers:
        stop()
        sys.exit("baseline: a worker failed to start")
    print(f"READY {port}", flush=True)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


class BaselineServer:
    """Runs the baseline server in a child process for the length of a ``with`` block."""

    def __init__(
        self,
        *,
        workers: int | None = None,
        cpus: Iterable[int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.cpus = sorted(cpus) if cpus else None
        self.workers = workers or len(self.cpus or os.sched_getaffinity(0))
        self.host = host
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BaselineServer:
        cmd = [sys.executable, "-m", "benchlab.baseline", "--host", self.host,
               "--port", str(self.port), "--workers", str(self.workers)]  # fmt: skip
        if self.cpus:
            cmd += ["--cpus", ",".join(map(str, self.cpus))]
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        deadline = time.monotonic() + self.start_timeout_s
        line = ""
        assert self.proc.stdout is not None
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self._stderr.seek(0)
        why = " | ".join(self._stderr.read().strip().splitlines()[-3:]) or line.strip() or "no output"
        self.stop()
        raise BenchlabError(f"baseline server did not start: {why}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> BaselineServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchlab.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cpus", default="", help="comma-separated CPU ids to pin the workers to")
    args = parser.parse_args(argv)
    cpus = {int(c) for c in args.cpus.split(",") if c.strip()} or None
    serve(args.host, args.port, max(1, args.workers), cpus)


if __name__ == "__main__":
    main()
