"""What /benchlab/info reports: what ran, and the server's CPU and memory use.

The loadgen cannot see the server's processes (it may run in another container), so the
server samples its own process tree: the launcher (master) and every descendant.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
_DIST_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def package_versions(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """Installed version of every distribution named in requirements.txt (pins can lie)."""
    versions = {}
    for line in requirements.read_text().splitlines():
        match = _DIST_NAME.match(line.split("#", 1)[0])
        if match:
            name = match.group(1)
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = "not installed"
    return versions


def master_pid() -> int:
    """The launcher's pid, exported before workers start; this process when run bare."""
    raw = os.environ.get("BENCHLAB_MASTER_PID", "")
    return int(raw) if raw.isdigit() else os.getpid()


def tree_usage(root_pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) summed over ``root_pid`` and all its descendants.

    CPU includes each process's reaped children, so the counter never goes backwards when a
    worker is replaced; processes that exit mid-sample are skipped.
    """
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0
    cpu = rss = 0.0
    for proc in procs:
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                cpu += t.user + t.system + t.children_user + t.children_system
                rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return round(cpu, 3), round(rss / 2**20, 1)


class Info:
    """The static part is computed once per worker; usage is sampled per request."""

    def __init__(self, workers: int) -> None:
        self.pid = master_pid()
        self.static = {
            "target_pid": self.pid,
            "workers": workers,
            "cpus": sorted(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "packages": package_versions(),
        }

    def payload(self) -> dict[str, Any]:
        cpu_seconds, rss_mb = tree_usage(self.pid)
        return {**self.static, "cpu_seconds": cpu_seconds, "rss_mb": rss_mb}
