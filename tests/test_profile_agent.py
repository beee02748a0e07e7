"""``benchlab profile-agent`` for real, without Docker: the agent a compose sidecar runs, driven by
the loadgen's ``AgentRecorder`` over loopback, recording a real Python process tree with py-spy;
its ptrace probe refusing when it may not read its target; and the loadgen's refusals before a
compose run (no overlay, no sidecar answering, a free-threaded target)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import run_benchlab

from benchlab.errors import BenchlabError
from benchlab.ports import free_port
from benchlab.profiling import sidecar
from benchlab.profiling.sidecar import OVERLAY_COMMAND, AgentRecorder, check_sidecars
from benchlab.profiling.speedscope import read_speedscope
from benchlab.sampling import process_tree
from benchlab.targets import load_targets

# A master with two busy workers, like a pre-fork server's tree.
BUSY_TREE = """
import multiprocessing, time
def spin():
    while True:
        sum(i * i for i in range(1000))
if __name__ == "__main__":
    for _ in range(2):
        multiprocessing.Process(target=spin, daemon=True).start()
    while True:
        multiprocessing.active_children()  # reaps a worker that died, as a server's master does
        time.sleep(0.2)
"""
NOBODY = 65534


def _start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def busy_tree() -> Iterator[int]:
    """The master's pid; the whole tree is killed afterwards (SIGTERM kills the master before
    multiprocessing stops its daemon workers, which would go on spinning as orphans)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_TREE])
    time.sleep(1)  # the workers started
    yield proc.pid
    workers = process_tree(proc.pid)[1:]
    _stop(proc)
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.kill()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "a worker outlived the test"


def _agent(port: int, target_pid: int, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return _start([*prefix, sys.executable, "-m", "benchlab.cli", "profile-agent", "--port", str(port),
                   "--target-pid", str(target_pid)])  # fmt: skip


def _status(url: str, timeout_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = httpx.get(url + "/status", timeout=5).json()
            if status["probe"] != "probing":
                return status
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the agent never gave its probe's verdict"
        time.sleep(0.3)


def _target_with_agent_on(port: int, monkeypatch: pytest.MonkeyPatch):
    (target,) = load_targets(["fastapi-uvicorn"], env={})
    monkeypatch.setenv(f"BENCHLAB_PROFILE_PORT_{target.env_key}", str(port))
    return target


def test_the_agent_records_a_process_tree_for_the_loadgen(busy_tree: int, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    port = free_port()
    agent = _agent(port, busy_tree)
    try:
        target = _target_with_agent_on(port, monkeypatch)
        status = _status(sidecar.agent_url(target))
        assert status["probe"] == "ok" and status["py_spy"] == "0.4.3", status
        meta = check_sidecars([target], {target.name: {"python_build": "default"}})
        assert meta["version"] == "0.4.3" and meta["sidecars"][target.name]["uid"] == os.geteuid()
        output = tmp_path / "profiles" / "busy.speedscope.json"
        recorder = AgentRecorder.for_target(target, busy_tree, output, 100)
        assert recorder.start() is None
        second = AgentRecorder.for_target(target, busy_tree, tmp_path / "other.json", 100)
        assert "already running" in (second.start() or "")  # one recording at a time
        time.sleep(2)
        assert recorder.stop() is None
        assert recorder.seconds >= 2 and recorder.cpu_seconds is not None and recorder.died == []
        recording = read_speedscope(output)  # the file the breakdown and the flame graph read
        # more than one process: py-spy followed the tree (the master mostly sleeps, and idle
        # samples are left out, so it may not appear)
        assert recording.total > 0 and len({t.split(" Thread")[0] for t in recording.threads}) >= 2, list(
            recording.threads
        )
        assert any(f.name == "spin" for f in recording.frames)  # the workers' own function was sampled
        missing = AgentRecorder.for_target(target, 2**22 + 7, tmp_path / "none.json", 100)
        assert "cannot be seen" in (missing.start() or "")
    finally:
        _stop(agent)


def test_a_worker_killed_mid_recording_is_reported(busy_tree: int, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    port = free_port()
    agent = _agent(port, busy_tree)
    try:
        target = _target_with_agent_on(port, monkeypatch)
        _status(sidecar.agent_url(target))
        recorder = AgentRecorder.for_target(target, busy_tree, tmp_path / "p.json", 100)
        assert recorder.start() is None
        worker = psutil.Process(busy_tree).children()[0]
        time.sleep(0.5)
        worker.kill()
        time.sleep(0.5)
        recorder.stop()
        assert recorder.died == [worker.pid]
    finally:
        _stop(agent)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the agent as another user")
def test_an_agent_that_may_not_read_its_target_says_so_and_the_loadgen_refuses(
    busy_tree: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent as nobody, with no capability, beside a root process: its probe reports py-spy's
    refusal, and the loadgen's check turns it into one line naming the capability."""
    port = free_port()
    agent = _agent(port, busy_tree, ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                     "--inh-caps=-all", "--"))  # fmt: skip
    try:
        target = _target_with_agent_on(port, monkeypatch)
        status = _status(sidecar.agent_url(target))
        assert "ermission" in str(status["probe"]), status
        assert status["uid"] == NOBODY and int(str(status["capabilities"]), 16) == 0, status
        with pytest.raises(BenchlabError) as refused:
            check_sidecars([target], {})
        message = str(refused.value)
        assert "\n" not in message and "may not read" in message and "SYS_PTRACE" in message, message
    finally:
        _stop(agent)


def test_no_sidecar_answering_is_one_line_naming_the_overlay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidecar, "REACH_S", 1.0)
    target = _target_with_agent_on(free_port(), monkeypatch)  # nothing listens there
    with pytest.raises(BenchlabError) as refused:
        check_sidecars([target], {})
    message = str(refused.value)
    assert "\n" not in message and "does not answer" in message and OVERLAY_COMMAND in message, message


def test_a_free_threaded_target_is_refused_before_its_sidecar_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _target_with_agent_on(free_port(), monkeypatch)
    with pytest.raises(BenchlabError, match="free-threaded Python, which py-spy cannot read"):
        check_sidecars([target], {target.name: {"python_build": "free-threading"}})


def test_profile_in_compose_without_the_overlay_is_refused_before_the_lab(tmp_path: Path) -> None:
    """``PROFILE=1 docker compose up`` with compose.yaml alone: exit 2, one line with the command."""
    env = {"BENCHLAB_MODE": "compose", "PROFILE": "1", "BENCHLAB_PROFILER": ""}
    proc = run_benchlab("run", "--scenario", "smoke", "--targets", "fastapi-uvicorn", "--out", str(tmp_path), env=env,
                        timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert OVERLAY_COMMAND in lines[0] and "never gets ptrace" in lines[0], lines
    assert not any(tmp_path.iterdir())  # refused before any run directory
