"""``benchlab up --native`` as users run it: a real subprocess, real signals, real cleanup.

It prints ``NAME URL`` per target, the DSN and ``ready``; SIGINT or SIGTERM, before or after
``ready``, leaves no process and no Postgres data directory behind; a port in use or a
``BENCHLAB_PG_BINDIR`` without a server is one clear line and exit code 2. Without Postgres on
PATH it finds the distribution's; the pgserver wheel's (no pg_stat_statements) says once that
query counts go unverified.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil
import psycopg
import pytest
from helpers import BARE_PATH, debian_server, pgserver_bindir

from benchlab.ports import free_port
from benchlab.postgres import ENV_BINDIR

TARGET = "fastapi-uvicorn"
START_S = 180.0  # generous: the first run may build the service's virtual environment
STOP_S = 30.0
MARK = "BENCHLAB_TEST_MARK"  # an env var every descendant inherits
DSN = re.compile(r"^postgresql://\S+@127\.0\.0\.1:\d+/hello_world$")


@dataclass
class Up:
    """A running ``benchlab up`` with its output lines collected by reader threads."""

    proc: subprocess.Popen[str]
    mark: str
    stdout: queue.Queue[str]
    stderr: queue.Queue[str]

    def wait_line(self, stream: queue.Queue[str], prefix: str) -> list[str]:
        """Lines up to the first one starting with ``prefix``; fails after START_S without it."""
        lines: list[str] = []
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                line = stream.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            lines.append(line)
            if line.startswith(prefix):
                return lines
        pytest.fail(f"no line starting {prefix!r} from benchlab up; got {lines[-5:]}")

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _pump(pipe: IO[str], out: queue.Queue[str]) -> None:
    for line in pipe:
        out.put(line.rstrip("\n"))


def start_up(port: int, **env_vars: str) -> Up:
    """``env_vars`` override the environment; an inherited ``BENCHLAB_PG_BINDIR`` is dropped."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != ENV_BINDIR}
    env.update({f"BENCHLAB_PORT_{TARGET.upper().replace('-', '_')}": str(port), MARK: mark}, **env_vars)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchlab.cli", "up", "--native", "--targets", TARGET],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    up = Up(proc, mark, queue.Queue(), queue.Queue())
    for pipe, q in ((proc.stdout, up.stdout), (proc.stderr, up.stderr)):
        threading.Thread(target=_pump, args=(pipe, q), daemon=True).start()
    return up


def postmaster(up: Up) -> list[str]:
    """The command line of the Postgres server under ``benchlab up``."""
    for p in up.tree():
        cmd = p.cmdline()
        if "-D" in cmd and Path(cmd[0]).name == "postgres":
            return cmd
    raise AssertionError("no postgres process under benchlab up")


def postgres_root(up: Up) -> Path:
    """The throwaway Postgres directory (parent of its -D data directory)."""
    cmd = postmaster(up)
    return Path(cmd[cmd.index("-D") + 1]).parent


def marked(mark: str) -> list[psutil.Process]:
    """Live processes carrying this run's marker: everything benchlab up started inherits it,
    however it was started (own session, double fork) and whenever (even after a snapshot)."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(MARK) == mark:
                out.append(p)
        except psutil.Error:
            continue
    return out


def kill_leftovers(up: Up) -> None:
    """After a failed test: everything this run started (benchlab up included), by pid."""
    for p in marked(up.mark):
        with contextlib.suppress(psutil.Error):
            p.kill()
    up.proc.wait()


def assert_all_gone(up: Up, pg_root: Path, port: int) -> None:
    up.proc.wait(timeout=STOP_S)
    deadline = time.monotonic() + 5
    while (alive := marked(up.mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}; stderr: {drain(up.stderr)}"
    assert not pg_root.exists(), f"Postgres directory left behind: {pg_root}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


def drain(q: queue.Queue[str]) -> list[str]:
    """Everything a finished process wrote, once the reader threads have seen the pipe close."""
    time.sleep(0.2)
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_prints_urls_and_stops_cleanly(sig: signal.Signals) -> None:
    port = free_port()
    up = start_up(port)
    try:
        lines = up.wait_line(up.stdout, "ready")
        assert len(lines) == 3, lines
        assert lines[0] == f"{TARGET} http://127.0.0.1:{port}"
        assert DSN.match(lines[1]), lines[1]
        assert httpx.get(f"http://127.0.0.1:{port}/json", timeout=5).status_code == 200
        with psycopg.connect(lines[1], connect_timeout=5) as conn:
            assert conn.execute("SELECT count(*) FROM world").fetchone() == (10_000,)
        pg_root = postgres_root(up)
        running = marked(up.mark)  # the marker finds what must go: benchlab, Postgres, the server
        assert "postgres" in {p.name() for p in running} and len(running) >= 4, running
        os.kill(up.proc.pid, sig)
        assert_all_gone(up, pg_root, port)
        assert up.proc.returncode == 0
    finally:
        kill_leftovers(up)


def test_without_postgres_on_path_the_distribution_server_serves() -> None:
    """PATH without initdb or pg_config: Debian's /usr/lib/postgresql/<v>/bin, with query counts."""
    bindir = debian_server()
    port = free_port()
    up = start_up(port, PATH=BARE_PATH)
    try:
        lines = up.wait_line(up.stdout, "ready")
        pg_root = postgres_root(up)
        assert postmaster(up)[0] == str(bindir / "postgres")
        with psycopg.connect(lines[1], connect_timeout=5) as conn:
            assert conn.execute("SELECT count(*) FROM fortune").fetchone() == (12,)
            assert conn.execute("SELECT count(*) > 0 FROM pg_stat_statements").fetchone() == (True,)
        body = httpx.get(f"http://127.0.0.1:{port}/db", timeout=5).json()
        assert set(body) == {"id", "randomNumber"}
        os.kill(up.proc.pid, signal.SIGINT)
        assert_all_gone(up, pg_root, port)
        err = drain(up.stderr)
        assert not [line for line in err if "pg_stat_statements" in line], err
    finally:
        kill_leftovers(up)


def test_the_pgserver_wheel_serves_and_warns_once_about_query_counts() -> None:
    """The wheel's Postgres (what a machine without one falls back to) works, and says in one
    line that query counts will not be verified."""
    port = free_port()
    up = start_up(port, **{ENV_BINDIR: str(pgserver_bindir())})
    try:
        lines = up.wait_line(up.stdout, "ready")
        pg_root = postgres_root(up)
        assert "pgserver" in postmaster(up)[0]
        with psycopg.connect(lines[1], connect_timeout=5) as conn:
            assert conn.execute("SELECT count(*) FROM fortune").fetchone() == (12,)
        body = httpx.get(f"http://127.0.0.1:{port}/db", timeout=5).json()
        assert set(body) == {"id", "randomNumber"}
        os.kill(up.proc.pid, signal.SIGINT)
        assert_all_gone(up, pg_root, port)
        warnings = [line for line in drain(up.stderr) if "pg_stat_statements" in line]
        assert len(warnings) == 1 and "query counts will not be verified" in warnings[0], warnings
    finally:
        kill_leftovers(up)


def test_sigterm_during_start_up_cleans_up() -> None:
    port = free_port()
    up = start_up(port)
    try:
        up.wait_line(up.stderr, f"starting {TARGET}")
        pg_root = postgres_root(up)
        os.kill(up.proc.pid, signal.SIGTERM)
        assert_all_gone(up, pg_root, port)
        assert up.proc.returncode != 0
    finally:
        kill_leftovers(up)


def test_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = start_up(port)
        up.proc.wait(timeout=30)
    err = drain(up.stderr)
    assert up.proc.returncode == 2
    assert len(err) == 1, err
    assert str(port) in err[0] and "in use" in err[0], err
    assert drain(up.stdout) == []


def test_pg_bindir_without_a_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    up = start_up(free_port(), **{ENV_BINDIR: str(tmp_path)})
    up.proc.wait(timeout=30)
    err = drain(up.stderr)
    assert up.proc.returncode == 2
    assert len(err) == 1, err
    assert err[0].startswith("benchlab: ") and ENV_BINDIR in err[0] and str(tmp_path) in err[0], err
    assert drain(up.stdout) == []
