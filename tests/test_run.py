"""`benchlab run` end to end: the smoke scenario against the real targets, checked row by row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PERCENTILES, assert_healthy_rows, read_csv, rows_in, run_benchlab

from benchlab.contract import TFB_TESTS as TESTS  # the built-in scenarios run TechEmpower's tests
from benchlab.harness import NativeLab
from benchlab.sampling import BUSY_AT_START
from benchlab.targets import load_targets


def test_smoke_native_run_measures_every_target_and_test(smoke_native: tuple[Path, subprocess.CompletedProcess[str]]):
    run_dir, proc = smoke_native
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(run_dir)
    assert_healthy_rows(rows, [t.name for t in load_targets()], TESTS)
    assert len({r["step_id"] for r in rows}) == len(rows)
    # the database really worked during db steps: its CPU was visible natively
    db_rows = [r for r in rows if r["test"] in ("db", "updates")]
    assert all(r["db_cpu_cores"] != "" for r in db_rows)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["mode"] == "native"
    assert meta["scenario_name"] == "smoke"
    for name, info in meta["targets"].items():
        assert info["workers"] >= 1, name
        assert info["python"], name
        assert info["packages"], name
    assert meta["engines"]["wrk"] != "unavailable"
    assert meta["host"]["cores"] >= 1
    assert (run_dir / "raw").is_dir() and any((run_dir / "raw").iterdir())


def test_external_run_against_running_lab(smoke_runs: tuple[Path, Path]):
    rows = read_csv(smoke_runs[1])
    assert_healthy_rows(rows, [t.name for t in load_targets()], TESTS)





@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--targets", "nope"], "unknown target or group 'nope'"),
        (["run", "--tests", "nope"], "unknown test 'nope'"),
        (["run", "--scenario", "no-such-scenario"], "no-such-scenario"),
        (["verify", "--target", "fastapi-uvicorn=not-a-url"], "NAME=http"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path):
    proc = run_benchlab(*args, "--out", str(tmp_path)) if args[0] == "run" else run_benchlab(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_malformed_scenario_names_file_and_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nduration_s: 3\ntests:\n  json:\n    concurrency: [x]\n  nonsense: {}\n")
    proc = run_benchlab("run", "--scenario", str(bad), "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.yaml" in proc.stderr


def test_concurrency_above_open_file_limit_is_refused(tmp_path: Path):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    scenario = tmp_path / "huge.yaml"
    scenario.write_text(
        "name: huge\ndescription: too many connections\nduration_s: 1\n"
        f"tests:\n  json:\n    concurrency: [{hard + 1}]\n"
    )
    proc = run_benchlab("run", "--scenario", str(scenario), "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "open files" in proc.stderr and str(hard) in proc.stderr


def test_missing_wrk_says_how_to_install(tmp_path: Path):
    env = {"PATH": str(Path(sys.executable).parent)}
    proc = run_benchlab("run", "--scenario", "smoke", "--out", str(tmp_path), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "wrk" in proc.stderr and "apt-get install wrk" in proc.stderr


def test_target_that_never_becomes_ready(tmp_path: Path):
    env = {"BENCHLAB_READY_TIMEOUT": "2"}
    proc = run_benchlab("run", "--scenario", "smoke", "--target", "fastapi-uvicorn=http://127.0.0.1:9",
                        "--targets", "fastapi-uvicorn", "--out", str(tmp_path), env=env)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "did not become ready" in proc.stderr


def test_unwritable_output_directory(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_benchlab("run", "--scenario", "smoke", "--out", str(blocker / "sub"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "results directory" in proc.stderr


def test_open_loop_step_scales_from_measured_peak(lab: NativeLab, tmp_path: Path):
    """A closed-loop step, then k6 at half its peak: offered rate, achieved rate and dropped are recorded."""
    scenario = tmp_path / "open.yaml"
    scenario.write_text(
        "name: open\ndescription: one closed and one open-loop step\nduration_s: 2\npause_s: 0\n"
        "primer: {duration_s: 1, connections: 8}\nwarmup: false\nrepeats: 1\n"
        "tests:\n  json:\n    concurrency: [16]\n"
        "open_loop:\n  tests: [json]\n  fractions: [0.5]\n  duration_s: 3\n  vus: 16\n  max_vus: 64\n"
    )
    proc = run_benchlab("run", "--scenario", str(scenario), "--targets", "fastapi-uvicorn", "--dsn", lab.dsn,
                        "--out", str(tmp_path / "out"), "--no-report")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    closed, opened = read_csv(next((tmp_path / "out").iterdir()))
    assert closed["mode"] == "closed" and opened["mode"] == "open"
    offered = float(opened["offered_rps"])
    assert offered == pytest.approx(round(float(closed["rps"]) * 0.5), abs=1)
    assert float(opened["rps"]) == pytest.approx(offered, rel=0.25)
    assert opened["dropped"] != "" and int(opened["dropped"]) >= 0
    lat = [float(opened[f"latency_{p}_ms"]) for p in PERCENTILES]
    assert lat == sorted(lat)


def test_a_step_that_starts_on_a_busy_server_is_flagged_and_an_idle_one_is_not(lab: NativeLab, tmp_path: Path):
    """A server still working (here: another client's load, as a server works off requests whose
    client left) when a step starts is waited for up to settle_s, then the step is flagged; the
    same step on the idle server is not."""
    scenario = tmp_path / "settle.yaml"
    scenario.write_text(
        "name: settle\nduration_s: 1\npause_s: 0\nsettle_s: 1\nprimer: {duration_s: 1, connections: 4}\n"
        "tests:\n  json:\n    concurrency: [8]\n"
    )
    url = next(t.url for t in lab.targets if t.name == "fastapi-uvicorn")

    def run(out: str) -> dict[str, str]:
        proc = run_benchlab("run", "--scenario", str(scenario), "--targets", "fastapi-uvicorn", "--dsn", lab.dsn,
                            "--out", str(tmp_path / out), "--no-report")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        (row,) = read_csv(next((tmp_path / out).iterdir()))
        return row

    other = subprocess.Popen(["wrk", "-t1", "-c16", "-d120s", f"{url}/json"], stdout=subprocess.DEVNULL)
    try:
        busy = run("busy")
    finally:
        other.terminate()
        other.wait(timeout=10)
    assert busy["verification"].startswith("warn: ") and BUSY_AT_START in busy["verification"], busy
    idle = run("idle")
    assert idle["verification"] == "pass", idle


def test_target_dying_mid_run_is_recorded_and_others_go_on(tmp_path: Path):
    """Kill one target after its first step: its remaining rows say so, the other target is measured."""
    env = {"BENCHLAB_PORT_FASTAPI_UVICORN": "18182", "BENCHLAB_PORT_FASTAPI_HYPERCORN": "18183"}
    targets = load_targets(["fastapi-uvicorn", "fastapi-hypercorn"], env=env)
    with NativeLab(targets) as lab:
        victim = lab.running["fastapi-uvicorn"]
        args = ["run", "--scenario", "smoke", "--targets", "fastapi-uvicorn,fastapi-hypercorn",
                "--tests", "json,db,queries,fortunes", "--dsn", lab.dsn,
                "--out", str(tmp_path), "--no-report"]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchlab.cli", *args], env={**os.environ, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            [p for p in tmp_path.iterdir() if p.is_dir()] and rows_in(next(tmp_path.iterdir())) >= 1
        ):
            time.sleep(0.1)
        os.killpg(victim.process.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, stderr[-2000:]  # not every step was measured
    assert "Traceback" not in stderr
    rows = read_csv(next(tmp_path.iterdir()))
    assert len(rows) == 8 and len({r["step_id"] for r in rows}) == 8
    dead = [r for r in rows if r["target"] == "fastapi-uvicorn"][1:]
    assert dead and all(
        r["verification"].startswith("error") or int(r["errors_connect"] or 0) + int(r["errors_read"] or 0) > 0
        for r in dead
    ), dead
    assert_healthy_rows([r for r in rows if r["target"] == "fastapi-hypercorn"], ["fastapi-hypercorn"],
                        ("json", "db", "queries", "fortunes"))  # fmt: skip


def test_busy_target_is_waited_for_and_a_gone_one_is_not(tmp_path: Path):
    """Between tests the runner waits for a target that accepts connections but is not answering
    yet (here: frozen by SIGSTOP for 2 s, as a server still draining queued pipelined requests
    looks), and gives up at once on one that refuses them."""
    env = {"BENCHLAB_PORT_FASTAPI_HYPERCORN": "18183"}
    with NativeLab(load_targets(["fastapi-hypercorn"], env=env)) as lab:
        rt = lab.running["fastapi-hypercorn"]
        os.killpg(rt.process.pid, signal.SIGSTOP)
        try:
            assert not rt.target.answers(timeout_s=0.5)
            waker = subprocess.Popen(["sh", "-c", f"sleep 2; kill -CONT -{rt.process.pid}"])
            took = rt.target.answers_within(30, probe_s=1)
            waker.wait(timeout=10)
        finally:
            os.killpg(rt.process.pid, signal.SIGCONT)
        assert took is not None and 1.5 <= took < 15, took
        os.killpg(rt.process.pid, signal.SIGKILL)
        rt.process.wait(timeout=10)
        start = time.monotonic()
        assert rt.target.answers_within(30) is None
        assert time.monotonic() - start < 5
