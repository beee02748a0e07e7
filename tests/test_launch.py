"""A target's launcher refuses what it cannot use with one line and exit 2, before it waits for
the database or starts a worker: a taken port, a bad setting. Every target, started by its
registry command as the harness starts it (compose runs the same commands)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import own_targets, start_launcher

from benchlab.ports import free_port
from benchlab.targets import Target

EXIT_BOUND_S = 20.0  # interpreter and server imports on a loaded machine; no database wait
NOWHERE = "postgresql://benchmarkdbuser:benchmarkdbpass@127.0.0.1:{port}/hello_world"


@contextmanager
def _listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port()))
        squatter.listen()
        yield squatter.getsockname()[1]


def _refusals(targets: list[Target], kit: Path, **env: str) -> dict[str, tuple[int, list[str]]]:
    """Every target's launcher at once with ``env``: its exit code and stderr lines."""
    procs = {t.name: start_launcher(t, kit, DATABASE_URL=NOWHERE.format(port=free_port()), **env) for t in targets}
    started, out = time.monotonic(), {}
    try:
        for name, proc in procs.items():
            try:
                _, err = proc.communicate(timeout=max(1.0, started + EXIT_BOUND_S - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {EXIT_BOUND_S:.0f} s: it did not refuse")
            out[name] = (proc.returncode, err.strip().splitlines())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


def _assert_one_line(name: str, code: int, lines: list[str], expected: str) -> None:
    assert code == 2, f"{name} exited {code}: {lines[-5:]}"
    assert not any("Traceback" in ln for ln in lines), f"{name}: {lines[-10:]}"
    assert lines and expected in lines[-1], f"{name}: last line {lines[-1:]} does not say {expected!r}"


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    targets = own_targets()
    with _listening() as port:
        results = _refusals(targets, tmp_path, BENCHLAB_PORT=str(port))
    for name, (code, lines) in results.items():
        print(f"{name}: exit {code}: {lines[-1] if lines else ''}")
        _assert_one_line(name, code, lines, f"cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BENCHLAB_WORKERS": "0"}, "BENCHLAB_WORKERS must be >= 1, got 0"),
        ({"BENCHLAB_PORT": "http"}, "BENCHLAB_PORT must be an integer, got 'http'"),
        ({"BENCHLAB_PORT": "70000"}, "BENCHLAB_PORT must be a TCP port"),
        ({"BENCHLAB_MAX_DB_CONNECTIONS": "1", "BENCHLAB_WORKERS": "2"}, "2 workers x 1 connections exceeds 0"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    results = _refusals(own_targets(), tmp_path, **{"BENCHLAB_PORT": str(free_port()), **env})
    for name, (code, lines) in results.items():
        _assert_one_line(name, code, lines, expected)
