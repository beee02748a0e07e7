"""``GET /benchlab/info`` from every target: what ran (installed distributions) and what it costs.

One module (``benchlab/target_kit.py``) answers it on every server; these tests read it as the
sampler does, over HTTP, and check it against what is really installed and running.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import TEST_TARGETS

from benchlab.engines.wrk import run_wrk, threads_for
from benchlab.harness import NativeLab
from benchlab.sampling import StepSampler
from benchlab.targets import Target, load_targets

ROOT = Path(__file__).resolve().parents[1]
# One target per server and worker class: each supervisor replaces a worker that died its own way.
SUPERVISORS: dict[tuple[str, str], str] = {}
for _t in load_targets(TEST_TARGETS):
    SUPERVISORS.setdefault((_t.server, _t.worker_class), _t.name)
RESPAWNING = list(SUPERVISORS.values())


def info(target: Target) -> dict:
    resp = httpx.get(target.url + "/benchlab/info", timeout=10)
    assert resp.status_code == 200
    return resp.json()


def pins(service: str) -> dict[str, str]:
    out = {}
    for line in (ROOT / "services" / service / "requirements.txt").read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s#;]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_info_reports_installed_distributions_and_memory(target: Target) -> None:
    got = info(target)
    installed = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in got["packages"].items()}
    pinned = pins(target.service)
    assert pinned, target.service
    wrong = {name: (version, installed.get(name)) for name, version in pinned.items() if installed.get(name) != version}
    assert not wrong, f"pinned vs installed: {wrong}"
    master = psutil.Process(got["target_pid"])
    assert got["workers"] >= 1 and len(master.children(recursive=True)) >= got["workers"]
    # PSS divides the pages forked workers share, so it is at most the summed RSS.
    assert 0 < got["pss_mb"] <= got["rss_mb"] + 0.5
    assert got["cpu_seconds"] > 0


def _workers(master_pid: int) -> list[psutil.Process]:
    """The serving children (uvicorn's multiprocessing helpers are not workers)."""
    kids = psutil.Process(master_pid).children()
    out = []
    for p in kids:
        try:  # a worker just killed is a zombie until its master reaps it: not serving
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.mark.parametrize("name", RESPAWNING)
def test_cpu_counter_survives_a_worker_killed_mid_step(lab: NativeLab, name: str) -> None:
    target = lab.running[name].target
    master = info(target)["target_pid"]
    workers_before = {p.pid for p in _workers(master)}
    readings: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            try:
                readings.append(info(target)["cpu_seconds"])
            except (httpx.HTTPError, AssertionError):
                continue  # the worker that answered was the one killed

    def kill_one() -> None:
        time.sleep(1.5)
        victim = max(_workers(master), key=lambda p: p.cpu_times().user)
        victim.send_signal(signal.SIGKILL)

    poller, killer = threading.Thread(target=poll), threading.Thread(target=kill_one)
    with StepSampler(target.url) as sampler:
        poller.start()
        killer.start()
        m = run_wrk(target.url + "/json", connections=16, duration_s=4, threads=threads_for(16))
        killer.join()
    stop.set()
    poller.join()
    assert m.requests > 0
    # Cumulative CPU of the whole tree never drops below what it was before the kill: the
    # master reaped the dead worker, so its CPU moved into the master's children's time.
    assert readings and min(readings[1:] or readings) >= readings[0] - 0.01, readings
    assert readings[-1] >= max(readings[: len(readings) // 3 or 1]) - 0.01, readings
    assert sampler.result is not None and sampler.result.server_cpu_cores and sampler.result.server_cpu_cores > 0
    deadline = time.monotonic() + 20
    while len(_workers(master)) < len(workers_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    after = {p.pid for p in _workers(master)}
    assert len(after) == len(workers_before) and after != workers_before, "the dead worker was not replaced"
    assert target.answers()
