"""The database's CPU and memory on its own host: through Docker's stats API (``ContainerCpu``,
when this process drives the database host's engine) or ``hosts.dbstats`` beside it
(``EndpointCpu``, for a load generator on a third host, which drives no engine).

The load generator cannot see a remote Postgres's processes, so its container's cgroup
counters stand in for them: cumulative CPU time (``cpu_stats.cpu_usage.total_usage``, ns) and
memory in use. ``ContainerCpu`` plugs into the sampler where a local run passes the
Postgres process list (``Lab.db_processes``): called, it returns one stand-in whose
``cpu_times()`` is the container's, the way ``sampling.processes_cpu_seconds`` reads a
process; so ``db_cpu_cores`` means the same thing in every mode. Read failures give an empty
list: the sampler then records no figure rather than a wrong one.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import httpx

from benchlab.hosts.engine import ENGINE_ERRORS


class CpuTimes(NamedTuple):
    user: float  # the container's whole CPU time: cgroups do not split user and system per se
    system: float = 0.0
    children_user: float = 0.0
    children_system: float = 0.0


class ContainerCpu:
    """A callable process list for ``StepSampler(db_processes=...)``, read from Docker stats."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.memory_peak_mb: float | None = None
        self._lock = threading.Lock()
        self._last: float | None = None

    def __call__(self) -> list[ContainerCpu]:
        try:
            stats = self.container.client.api.stats(self.container.id, stream=False, one_shot=True)
            self._last = stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
            used = (stats.get("memory_stats") or {}).get("usage")
        except (*ENGINE_ERRORS, KeyError, TypeError):
            return []
        if used:
            with self._lock:
                self.memory_peak_mb = round(max(self.memory_peak_mb or 0.0, used / 2**20), 1)
        return [self]

    def cpu_times(self) -> CpuTimes:
        """The last read's figure (only handed out after a read succeeded)."""
        return CpuTimes(self._last or 0.0)


class EndpointCpu(ContainerCpu):
    """The same stand-in, read from ``hosts.dbstats``' ``GET /stats`` on the database host."""

    def __init__(self, url: str) -> None:
        super().__init__(None)
        self.url = url.rstrip("/") + "/stats"

    def __call__(self) -> list[ContainerCpu]:
        try:
            stats = httpx.get(self.url, timeout=2.0).json()
            self._last, used = float(stats["cpu_seconds"]), stats.get("memory_mb")
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        if used:
            with self._lock:
                self.memory_peak_mb = round(max(self.memory_peak_mb or 0.0, float(used)), 1)
        return [self]
