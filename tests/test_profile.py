"""``benchlab run --native --profile`` for real: py-spy on the targets' masters and workers, the
profiled rows in results.csv, profile.csv, the speedscope files, the flame graphs and the report;
and the refusals before a run starts (no py-spy; ptrace refused by the kernel)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest
from helpers import only_run_dir, read_csv, run_benchlab

from benchlab.ports import free_port
from benchlab.profiling.breakdown import IDLE, PROFILE_COLUMNS
from benchlab.profiling.components import COMPONENT_NAMES
from benchlab.profiling.pyspy import find_py_spy
from benchlab.targets import load_targets

TARGETS = ("fastapi-uvicorn", "flask-gunicorn-gevent")
TESTS = ("json", "db")
SCENARIO = """name: profiled
duration_s: 3
pause_s: 0
primer: {duration_s: 1, connections: 8}
warmup: false
tests:
  json: {concurrency: [16, 32]}
  db: {concurrency: [32]}
"""


def _ports() -> dict[str, str]:
    return {f"BENCHLAB_PORT_{t.env_key}": str(free_port()) for t in load_targets(["all"])}


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("profiled")
    scenario = out / "profiled.yaml"
    scenario.write_text(SCENARIO)
    proc = run_benchlab("run", "--native", "--profile", "--scenario", str(scenario), "--targets", ",".join(TARGETS),
                        "--out", str(out / "runs"), env=_ports())  # fmt: skip
    return only_run_dir(out / "runs"), proc


def test_profiled_steps_are_rows_of_their_own(profiled_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, proc = profiled_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(run_dir)
    profiled = [r for r in rows if r["mode"] == "profiled"]
    assert sorted((r["target"], r["test"]) for r in profiled) == sorted((t, x) for t in TARGETS for x in TESTS)
    for r in profiled:
        where = f"{r['target']} {r['test']}"
        assert r["verification"] == "pass", where
        assert int(r["requests"]) > 0 and float(r["server_cpu_cores"]) > 0, where
        measured = [m for m in rows if (m["target"], m["test"], m["mode"]) == (r["target"], r["test"], "closed")]
        peak = max(measured, key=lambda m: float(m["rps"]))
        assert r["concurrency"] == peak["concurrency"], f"{where}: profiled at the peak level"
        assert float(r["profiler_overhead"]) == pytest.approx(1 - float(r["rps"]) / float(peak["rps"]), abs=1e-3)
    assert all(r["profiler_overhead"] == "" for r in rows if r["mode"] != "profiled")
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["profile"]["profiler"] == "py-spy" and meta["profile"]["version"] == "0.4.3"


def test_profile_csv_splits_the_measured_cpu(profiled_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, _ = profiled_run
    with (run_dir / "profile.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == PROFILE_COLUMNS
        rows = list(reader)
    steps = {(r["target"], r["test"]): r for r in read_csv(run_dir) if r["mode"] == "profiled"}
    for (target, test), step in steps.items():
        mine = [r for r in rows if (r["target"], r["test"]) == (target, test)]
        assert [r["component"] for r in mine] == [*COMPONENT_NAMES, IDLE]
        busy = mine[:-1]
        assert sum(int(r["samples"]) for r in busy) > 50, f"{target} {test}: too few samples"
        assert math.isclose(sum(float(r["share"]) for r in busy), 1.0, abs_tol=0.01)
        cpu_us = float(step["server_cpu_cores"]) * float(step["duration_s"]) * 1e6 / int(step["requests"])
        assert sum(float(r["cpu_us_per_request"]) for r in busy) == pytest.approx(cpu_us, rel=0.01)
        share = {r["component"]: float(r["share"]) for r in busy}
        assert share["server"] > 0 and share["framework"] > 0, f"{target} {test}: {share}"
        assert share["other"] <= 0.05, f"{target} {test}: {share['other']:.1%} in other"
        if test == "db":
            assert share["database driver"] > 0, f"{target} db: {share}"


def test_speedscope_and_flame_graph_per_target_and_test(
    profiled_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, _ = profiled_run
    for target in TARGETS:
        for test in TESTS:
            data = json.loads((run_dir / "profiles" / target / f"{test}.speedscope.json").read_text())
            assert data["$schema"].endswith("file-format-schema.json")
            processes = {p["name"].split(" Thread")[0] for p in data["profiles"]}
            assert len(processes) >= 2, f"{target} {test}: only {processes}: the workers were not sampled"
            svg = ET.parse(run_dir / "profiles" / target / f"{test}.svg").getroot()
            assert svg.tag == "{http://www.w3.org/2000/svg}svg"
            assert len(list(svg.iter("{http://www.w3.org/2000/svg}rect"))) > 10


def test_report_shows_cpu_per_request(profiled_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, _ = profiled_run
    html = (run_dir / "report.html").read_text()
    assert 'id="profile"' in html
    for test in TESTS:
        assert f'id="chart-profile-{test}"' in html and (run_dir / "charts" / f"profile-{test}.png").is_file()
    for target in TARGETS:
        assert f'href="profiles/{target}/db.svg"' in html
    summary = (run_dir / "summary.csv").read_text()
    assert "profiled" not in summary, "a profiled step counted as a measurement"


# ---------------------------------------------------------------- refusals, before anything starts


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def test_refused_without_py_spy(tmp_path: Path) -> None:
    """benchlab installed in an environment without py-spy, none on PATH."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "benchlab-from-test.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    env = {**os.environ, **_ports(), "PATH": "/usr/bin:/bin"}
    env.pop("BENCHLAB_PY_SPY", None)
    out = tmp_path / "runs"
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "benchlab.cli", "run", "--native", "--profile",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    _refused(proc, "py-spy", "pip install py-spy==0.4.3")
    assert not out.exists() or not any(out.iterdir()), "a run directory was made"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing to another user needs root")
def test_refused_when_ptrace_is_not_permitted(tmp_path: Path) -> None:
    """py-spy as an unprivileged user without capabilities: the kernel refuses it the targets'
    memory (process_vm_readv and /proc/PID/mem alike), as it would under Yama or without CAP_SYS_PTRACE."""
    wrapper = tmp_path / "py-spy-as-nobody"
    wrapper.write_text("#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "
                       f'--bounding-set=-all {find_py_spy()} "$@"\n')  # fmt: skip
    wrapper.chmod(0o755)
    out = tmp_path / "runs"
    proc = run_benchlab("run", "--native", "--profile", "--out", str(out),
                        env={**_ports(), "BENCHLAB_PY_SPY": str(wrapper)})  # fmt: skip
    _refused(proc, "py-spy may not read processes here", "Permission Denied", "CAP_SYS_PTRACE")
    assert not out.exists() or not any(out.iterdir())


def test_refused_outside_native_mode(tmp_path: Path) -> None:
    proc = run_benchlab("run", "--profile", "--targets", "fastapi-uvicorn", "--out", str(tmp_path),
                        env={"BENCHLAB_READY_TIMEOUT": "1"})  # fmt: skip
    _refused(proc, "--native", "PROFILE=1")
    compose = run_benchlab("run", "--targets", "fastapi-uvicorn", "--out", str(tmp_path),
                           env={"BENCHLAB_READY_TIMEOUT": "1", "BENCHLAB_MODE": "compose", "PROFILE": "1"})  # fmt: skip
    _refused(compose, "compose.profile.yaml", "PROFILE=1")  # the overlay's command (tests/test_profile_agent.py)


# ---------------------------------------------------------------- a worker dying mid-profile


def _kill_a_worker_once_profiled(stop: threading.Event, killed: list[int]) -> None:
    """Waits for our run's py-spy, then SIGKILLs one worker of the master it records."""
    me = psutil.Process()
    while not stop.is_set():
        for p in me.children(recursive=True):
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if len(cmd) > 3 and cmd[0].endswith("py-spy") and cmd[1] == "record":
                master = psutil.Process(int(cmd[cmd.index("--pid") + 1]))
                time.sleep(0.5)
                worker = master.children()[0]
                worker.kill()
                killed.append(worker.pid)
                return
        time.sleep(0.05)


def test_a_worker_dying_mid_profile_is_a_row_and_the_run_goes_on(tmp_path: Path) -> None:
    scenario = tmp_path / "one.yaml"
    scenario.write_text("name: one\nduration_s: 3\nprimer: {duration_s: 1, connections: 4}\n"
                        "tests:\n  json: {concurrency: [8]}\n  plaintext: {concurrency: [8]}\n")  # fmt: skip
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_a_worker_once_profiled, args=(stop, killed), daemon=True)
    watcher.start()
    try:
        env = {**os.environ, **_ports()}
        proc = subprocess.run([sys.executable, "-m", "benchlab.cli", "run", "--native", "--profile", "--no-report",
                               "--scenario", str(scenario), "--targets", "flask-gunicorn-gevent",
                               "--out", str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert killed, "no profiled step was seen"
    rows = read_csv(only_run_dir(tmp_path / "runs"))
    profiled = {r["test"]: r for r in rows if r["mode"] == "profiled"}
    assert profiled["json"]["verification"] == f"error: worker(s) {killed[0]} died mid-profile"
    assert profiled["plaintext"]["verification"] == "pass", "the run did not go on"
    assert proc.returncode == 1, proc.stderr[-2000:]  # one step without a measurement


def test_resume_owes_only_the_profiled_steps(
    profiled_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """A run interrupted after its measured steps profiles on --resume, from the levels in its CSV."""
    src, _ = profiled_run
    run_dir = tmp_path / src.name
    shutil.copytree(src, run_dir, ignore=shutil.ignore_patterns("profiles", "profile.csv"))
    lines = (run_dir / "results.csv").read_text().splitlines(keepends=True)
    (run_dir / "results.csv").write_text("".join(ln for ln in lines if ",profiled," not in ln))
    meta = json.loads((run_dir / "run.json").read_text())
    meta["status"] = "interrupted"
    (run_dir / "run.json").write_text(json.dumps(meta))
    proc = run_benchlab("run", "--native", "--resume", str(run_dir), "--no-report", env=_ports())  # no --profile
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(run_dir)
    assert len(rows) == len(read_csv(src)), "measured steps were redone"
    assert sorted((r["target"], r["test"]) for r in rows if r["mode"] == "profiled") == sorted(
        (t, x) for t in TARGETS for x in TESTS
    )
    assert (run_dir / "profiles" / TARGETS[0] / "db.svg").is_file()
