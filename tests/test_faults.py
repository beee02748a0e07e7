"""What `benchlab run` does when things go wrong around it: the lab keeps working, says what
happened in one line, and loses nothing.

Each fault is real: SIGINT and SIGKILL of the real command (then ``--resume``), a real small
filesystem that fills up mid-run, a real lowered open-file limit. What is asserted is what a
user sees: exit codes, the ``benchlab:`` line, rows in results.csv, run.json's status, and
which processes and temp directories are left.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import NATIVE_RUN_PORTS
from helpers import assert_healthy_rows, read_csv, rows_in, run_benchlab

from benchlab.config.scenario import load_scenario
from benchlab.errors import BenchlabError
from benchlab.harness import NativeLab
from benchlab.model.codec import ResultsWriter, read_rows
from benchlab.model.level import Level
from benchlab.model.modes import LoadMode
from benchlab.model.status import Status, StepStatus
from benchlab.model.step import Step
from benchlab.postgres import OWNER_FILE
from benchlab.rundir import write_run_json
from benchlab.runner import step_id
from benchlab.targets import load_targets

TARGET = "fastapi-uvicorn"
MARK = "BENCHLAB_FAULT_MARK"  # every process a run starts inherits it
WAIT_S = 240.0  # a native run may first build the service's virtual environment
GONE_S = 15.0  # what "a few seconds" may take on a loaded shared machine
SHORT = """name: faults
description: short steps, several per test, so a run can be stopped between them
duration_s: 1
pause_s: 0
timeout_s: 5
primer: {duration_s: 1, connections: 4}
warmup: false
repeats: 1
tests:
  json: {concurrency: [4, 8]}
  plaintext: {concurrency: [8], pipeline: 4}
  db: {concurrency: [4, 8]}
  fortunes: {concurrency: [8]}
"""
SHORT_TESTS = ("json", "plaintext", "db", "fortunes")


def short_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(SHORT)
    return path


def planned(scenario: Path, env: dict[str, str]) -> set[str]:
    return {step_id(s) for s in load_scenario(str(scenario)).plan(load_targets([TARGET], env=env))}


def _as_from_a_terminal() -> None:
    """Ctrl-C's default action, as a terminal's shell gives it: a test suite started in the
    background (``cmd &``) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(*args: str, out: Path, mark: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`benchlab run` as a user starts it, in its own session, stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchlab.cli", "run", *args, "--out", str(out), "--no-report"],
        env={**os.environ, **(env or {}), MARK: mark}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True, preexec_fn=_as_from_a_terminal,
    )  # fmt: skip


def wait_rows(proc: subprocess.Popen[str], out: Path, rows: int) -> Path:
    """The run directory, once its results.csv holds ``rows`` rows (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        dirs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
        if dirs and rows_in(dirs[0]) >= rows:
            return dirs[0]
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {rows} rows: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {rows} rows within {WAIT_S:.0f} s")


def marked(mark: str) -> list[psutil.Process]:
    """Live processes of the run carrying ``mark`` (benchlab, Postgres, the target, its workers)."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(MARK) == mark:
                found.append(p)
    return found


def owned_dirs(pid: int) -> list[Path]:
    """The temp directories (Postgres data, logs) whose owner record names ``pid``."""
    tmp = Path(tempfile.gettempdir())
    found = []
    for d in [*tmp.glob("benchlab-pg-*"), *tmp.glob("benchlab-logs-*")]:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((d / OWNER_FILE).read_text())["pid"] == pid:
                found.append(d)
    return found


def assert_nothing_left(mark: str) -> None:
    deadline = time.monotonic() + GONE_S
    while (alive := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in alive:  # so that a failure here does not hold the ports for the next test
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("benchlab: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_stopped_native_run_leaves_nothing_and_resumes(sig: signal.Signals, tmp_path: Path) -> None:
    """Stop `benchlab run --native` mid-run; nothing of its lab survives it (SIGKILL included:
    the kernel's death signal, then the next start's clean-up); `--resume` finishes every step once."""
    scenario, out, mark = short_scenario(tmp_path), tmp_path / "out", uuid.uuid4().hex
    args = ["--native", "--scenario", str(scenario), "--targets", TARGET]
    proc = start_run(*args, out=out, mark=mark, env=NATIVE_RUN_PORTS)
    try:
        run_dir = wait_rows(proc, out, 2)
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert_nothing_left(mark)
    before = read_csv(run_dir)
    assert len(before) >= 2 and len({r["step_id"] for r in before}) == len(before)
    meta = json.loads((run_dir / "run.json").read_text())
    if sig == signal.SIGINT:
        assert "benchlab: interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
        assert meta["status"] == "interrupted"
        assert owned_dirs(proc.pid) == []
        # a native run resumed against whatever runs elsewhere would mix two labs' figures
        wrong = run_benchlab("run", "--resume", str(run_dir), "--no-report")
        assert wrong.returncode == 2
        assert "native run" in one_error_line(wrong.stderr) and "--native" in wrong.stderr
    else:
        assert meta["status"] == "running"  # nothing could record the kill...
        left = owned_dirs(proc.pid)
        assert left, "the killed run's temp directories were expected to wait for the next start"
    resumed = run_benchlab("run", "--resume", str(run_dir), "--native", "--no-report", env=NATIVE_RUN_PORTS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if sig == signal.SIGKILL:
        assert "was interrupted: its process is gone" in resumed.stderr  # ...so the resume says it
        assert not [d for d in left if d.exists()], "the next start did not remove the killed run's directories"
    after = read_csv(run_dir)
    assert after[: len(before)] == before
    assert sorted(r["step_id"] for r in after) == sorted(planned(scenario, NATIVE_RUN_PORTS))
    assert_healthy_rows(after, [TARGET], SHORT_TESTS)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


def test_killed_run_leaves_valid_csv_and_resumes(lab: NativeLab, tmp_path: Path) -> None:
    """SIGKILL mid-run (external mode) keeps the finished rows; --resume completes it without redoing them."""
    args = ["run", "--scenario", "smoke", "--targets", "fastapi-uvicorn", "--tests", "json,db,queries,fortunes",
            "--dsn", lab.dsn, "--out", str(tmp_path), "--no-report"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "benchlab.cli", *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline:
        dirs = [p for p in tmp_path.iterdir() if p.is_dir()]
        if dirs and rows_in(dirs[0]) >= 2:
            run_dir = dirs[0]
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run_dir is not None, "the run never wrote two rows"
    before = read_csv(run_dir)
    assert 2 <= len(before) < 4
    resumed = run_benchlab("run", "--resume", str(run_dir), "--dsn", lab.dsn, "--no-report")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = read_csv(run_dir)
    assert after[: len(before)] == before  # finished steps untouched
    assert len(after) == 4 and len({r["step_id"] for r in after}) == 4
    assert_healthy_rows(after, ["fastapi-uvicorn"], ("json", "db", "queries", "fortunes"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[Path]:
    """A real tmpfs of ``size_kb`` at ``path``, unmounted afterwards. Mounting needs root: a
    developer without it is skipped, CI (root) fails instead."""
    path.mkdir()
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert mounted.returncode == 0, f"cannot mount a tmpfs at {path}: {mounted.stderr.strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(fs: Path) -> Path:
    """Fills the filesystem to the last byte; the filler is the one file to delete to free it."""
    filler = fs / "filler"
    with filler.open("wb", buffering=0) as fh:
        for chunk in (65536, 4096, 512, 64, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * chunk)
    return filler


def full_row(i: int) -> Step:
    """A row as long as a real one can get (the longest verification reason), so rows straddle pages."""
    return Step(target="t", test="json", mode=LoadMode.CLOSED, level=Level(1, 1), repeat=1,
                status=StepStatus(Status.WARN, "x" * 1500), step_id=f"step-{i}")  # fmt: skip


def test_results_writer_on_a_full_disk_keeps_whole_rows(tmp_path: Path) -> None:
    """A row that does not fit is undone: one BenchlabError, and the CSV ends with its last whole row."""
    with small_filesystem(tmp_path / "fs", 64) as fs:
        run_dir = fs / "run"
        run_dir.mkdir()
        with ResultsWriter(run_dir) as writer:
            writer.write(full_row(0))
            fill(fs)
            written = 1
            with pytest.raises(BenchlabError, match="No space left on device"):
                for i in range(1, 100):  # the rest of the CSV's last page, then a row torn at its end
                    writer.write(full_row(i))
                    written += 1
        data = (run_dir / "results.csv").read_bytes()
        assert data.endswith(b"\r\n")
        rows = read_rows(run_dir)
        assert [r["step_id"] for r in rows] == [f"step-{i}" for i in range(written)]
        assert all(r["verification"] == full_row(0).verification for r in rows)


def test_run_json_on_a_full_disk_keeps_the_previous_one(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", 64) as fs:
        write_run_json(fs, {"status": "running", "run_id": "r"})
        fill(fs)
        with pytest.raises(BenchlabError, match=r"run\.json: No space left on device"):
            write_run_json(fs, {"status": "complete", "run_id": "r", "big": "x" * 20000})
        assert json.loads((fs / "run.json").read_text()) == {"status": "running", "run_id": "r"}
        assert not (fs / "run.json.tmp").exists()


def test_disk_full_mid_run_is_one_line_and_resumes(lab: NativeLab, tmp_path: Path) -> None:
    """The results filesystem fills after the first rows: one `benchlab:` line, a non-zero exit,
    the rows written so far intact, a valid run.json and no temp file; freed, `--resume` finishes."""
    scenario = short_scenario(tmp_path)
    with small_filesystem(tmp_path / "fs", 1024) as fs:
        out = fs / "out"
        proc = start_run("--scenario", str(scenario), "--targets", TARGET, "--dsn", lab.dsn,
                         out=out, mark=uuid.uuid4().hex)  # fmt: skip
        try:
            run_dir = wait_rows(proc, out, 1)
            filler = fill(fs)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2
        assert "No space left on device" in one_error_line(stderr)
        before = read_csv(run_dir)
        assert before and len({r["step_id"] for r in before}) == len(before)
        assert (run_dir / "results.csv").read_bytes().endswith(b"\r\n")  # no torn row
        assert not (run_dir / "run.json.tmp").exists()
        assert json.loads((run_dir / "run.json").read_text())["status"] in ("running", "failed")
        filler.unlink()
        resumed = run_benchlab("run", "--resume", str(run_dir), "--dsn", lab.dsn, "--no-report")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        after = read_csv(run_dir)
        assert after[: len(before)] == before
        assert sorted(r["step_id"] for r in after) == sorted(planned(scenario, {}))
        assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


def test_read_only_run_directory_on_resume_is_one_line(lab: NativeLab, tmp_path: Path) -> None:
    """Resuming into a run directory that became unwritable (here: its filesystem remounted
    read-only, which even root cannot write) stops before anything starts."""
    scenario = short_scenario(tmp_path)
    with small_filesystem(tmp_path / "fs", 1024) as fs:
        proc = start_run("--scenario", str(scenario), "--targets", TARGET, "--tests", "json", "--dsn", lab.dsn,
                         out=fs / "out", mark=uuid.uuid4().hex)  # fmt: skip
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        (run_dir,) = (fs / "out").iterdir()
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, timeout=30)
        resumed = run_benchlab("run", "--resume", str(run_dir), "--dsn", lab.dsn, "--no-report")
        assert resumed.returncode == 2
        assert "cannot write to the results directory" in one_error_line(resumed.stderr)


def _nofile(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def test_open_file_limit_too_low_for_the_concurrency_is_refused_up_front(tmp_path: Path) -> None:
    """Under a lowered RLIMIT_NOFILE (as `prlimit` or a container's ulimit sets it) a concurrency
    the engine could not sustain is refused in one line before anything starts, not run into
    a pile of connect errors; the line names the limit and the fix."""
    scenario = tmp_path / "c64.yaml"
    scenario.write_text(SHORT.replace("json: {concurrency: [4, 8]}", "json: {concurrency: [64]}"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchlab.cli", "run", "--scenario", str(scenario), "--targets", TARGET,
         "--out", str(tmp_path / "out"), "--no-report"],
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: _nofile(100),
    )  # fmt: skip
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "open-file limit is 100" in line and "ulimit -n" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_target_master_killed_mid_run_records_no_zero_figures(tmp_path: Path) -> None:
    """Kill -9 only the target's master after the first row. Its workers may go on answering
    (for a master that is gone) or die with it; either way no later row records 0 cores or 0 MB
    as a measurement: it is not measured, or it warns that the sampler lost the target and
    leaves the server cells empty."""
    from benchlab.ports import free_port

    env = {f"BENCHLAB_PORT_{TARGET.upper().replace('-', '_')}": str(free_port())}
    scenario = tmp_path / "json.yaml"
    scenario.write_text(SHORT.split("tests:")[0] + "tests:\n  json: {concurrency: [4, 8, 16, 32]}\n")
    with NativeLab(load_targets([TARGET], env=env), workers=2) as lab:
        master = lab.running[TARGET].process
        proc = start_run("--scenario", str(scenario), "--targets", TARGET, "--dsn", lab.dsn,
                         out=tmp_path / "out", mark=uuid.uuid4().hex, env=env)  # fmt: skip
        try:
            run_dir = wait_rows(proc, tmp_path / "out", 1)
            master.kill()
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Traceback" not in stderr, stderr[-2000:]
    rows = read_csv(run_dir)
    assert len(rows) == 4 and len({r["step_id"] for r in rows}) == 4
    assert rows[0]["verification"] == "pass" and float(rows[0]["server_rss_mb"]) > 0
    for r in rows[1:]:
        status = r["verification"]
        if status.startswith(("pass", "warn")):
            assert "sampler lost the target" in status, r
            assert r["server_cpu_cores"] == r["server_rss_mb"] == r["server_pss_mb"] == "", r
        assert r["server_rss_mb"] != "0" and r["server_cpu_cores"] != "0", r
