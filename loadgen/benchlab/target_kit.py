"""What every target serves the same way: ``GET /benchlab/info``, its provenance and resource use.

One file for every server the lab measures, so the figures mean the same on each: the services
import it as ``target_kit`` (each image copies this file in; native runs put a copy on the
server's ``PYTHONPATH``), the baseline server as ``benchlab.target_kit``. It therefore imports
nothing from ``benchlab`` and needs only the standard library and psutil.

The load generator may not see the server's processes (another container, another host), so
the server samples its own process tree: the launcher (master) and every descendant.
- ``cpu_seconds``: user + system of every live process plus the children each has reaped, so
  a worker that dies and is replaced keeps its share (its master reaped it) and the counter
  does not go backwards.
- ``pss_mb``: proportional set size summed over the tree, the memory figure: pages that forked
  workers share are divided among them, not counted once per worker.
- ``rss_mb``: resident set size summed over the tree; shared pages count once per process, so
  it overstates a forked server's memory. Kept beside PSS, as the sampler's peak.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import psutil


def master_pid() -> int:
    """The launcher's pid, exported before workers start; this process when run bare."""
    raw = os.environ.get("BENCHLAB_MASTER_PID", "")
    return int(raw) if raw.isdigit() else os.getpid()


def installed_packages() -> dict[str, str]:
    """Every distribution installed in this environment, as the interpreter sees it."""
    found = {(dist.metadata["Name"] or "").lower(): dist.version for dist in metadata.distributions()}
    return dict(sorted((name, version) for name, version in found.items() if name))


def tree_usage(root_pid: int) -> dict[str, float]:
    """``cpu_seconds``, ``rss_mb`` and ``pss_mb`` summed over ``root_pid`` and its descendants;
    a process that exits mid-sample is skipped."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {"cpu_seconds": 0.0, "rss_mb": 0.0, "pss_mb": 0.0}
    cpu = rss = pss = 0.0
    for proc in procs:
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                mem = proc.memory_full_info()
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += mem.rss
            pss += getattr(mem, "pss", mem.rss)
        except psutil.Error:
            continue
    return {"cpu_seconds": round(cpu, 3), "rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1)}


class Info:
    """The static part is computed once per worker; usage is sampled per request."""

    def __init__(self, workers: int) -> None:
        self.pid = master_pid()
        self.static = {
            "target_pid": self.pid,
            "workers": workers,
            "cpus": sorted(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "packages": installed_packages(),
        }

    def payload(self) -> dict[str, Any]:
        return {**self.static, **tree_usage(self.pid)}
