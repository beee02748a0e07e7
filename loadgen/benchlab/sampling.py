"""Resource use during a step: server, database and load generator CPU, server memory.

The load generator may not see the server's processes (compose), so the server reports its
own process tree through ``GET /benchlab/info`` (cumulative ``cpu_seconds``, ``rss_mb``).
CPU use is a rate: (cumulative CPU seconds at the end - at the start) / wall seconds
between the two samples, in cores. Samples are taken when the step starts, every
``interval_s`` during it (for the memory peak, and as a fallback when the last fails) and
when it stops. Cumulative CPU includes reaped children (``children_user/system``), so a
process that exits mid-step (a Postgres backend, an engine run) keeps its share.

A sampler that lost its target says so (``Samples.lost``) instead of reporting zeros: the
reported ``target_pid`` changed mid-step (a restarted server is another tree), the tree came back
empty (orphaned workers of a dead master still answer, measuring nothing), or no sample at all
succeeded. Its server figures are then None.

Sampling never fails a step: what cannot be seen is None. It runs inside the load generator,
so it must cost next to nothing: one HTTP client (one TLS context, one kept-alive connection)
serves every sample of the process, instead of a new client per request.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import psutil

from benchlab.measurement import ENGINE_PIDS

INFO_PATH = "/benchlab/info"
FINAL_TIMEOUT_S = 5.0  # the end sample is needed for any CPU figure: wait for it longer
CLIENT_BOUND_SHARE = 0.9  # the client is the bottleneck when it uses this share of its CPUs
# In a step that waits on the upstream, the lab must stay far from its limits to measure the
# stack: the upstream (one process, so one core) and the load generator are each flagged at
# half of their CPUs (issue 24's rule).
WAITING_BOUND_SHARE = 0.5
UPSTREAM_STATS = "/stats"
# Between steps a server using less than this is idle; one still working off the last step's
# requests (whose clients left) uses a core or more.
IDLE_CORES = 0.25
# The windows an idle check measures over: the pause, at least the first (CPU time comes in
# 10 ms ticks), then the second while the target stays busy.
FIRST_WINDOW_S, SETTLE_WINDOW_S = 0.1, 0.5
BUSY_AT_START = "target still busy with the last step's work"


def server_busy(target_url: str, wait_s: float, settle_s: float) -> str | None:
    """Waits ``wait_s`` (a scenario's pause), then on until the target's CPU (from its
    ``/benchlab/info``) falls under IDLE_CORES, at most ``settle_s`` more. None when it went idle
    or cannot say (no info, gone: the step will tell); else why the next step starts on a busy
    server. A server too busy to answer within a second counts as busy."""
    window = max(wait_s, FIRST_WINDOW_S)
    deadline = time.monotonic() + window + settle_s
    last = _cpu_now(target_url)
    rate = None
    while True:
        time.sleep(window)
        now = _cpu_now(target_url)
        if now is None:
            return None
        if last not in (None, "busy") and now != "busy":
            rate = (now[1] - last[1]) / (now[0] - last[0])
            if rate < IDLE_CORES:
                return None
        if time.monotonic() >= deadline:
            using = "too busy to answer" if rate is None else f"using {rate:.2f} cores"
            return f"{BUSY_AT_START} ({using} after {settle_s:g} s more)"
        last, window = now, SETTLE_WINDOW_S


def _cpu_now(target_url: str) -> tuple[float, float] | str | None:
    """(time, the target's cumulative CPU seconds); "busy" when it did not answer within a
    second; None when it cannot say."""
    try:
        info = _info(info_url(target_url), 1.0)
        return None if info is None else (time.monotonic(), float(info["cpu_seconds"]))
    except httpx.TimeoutException:
        return "busy"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def info_url(target_url: str) -> str:
    return target_url.rstrip("/") + INFO_PATH


def _info(url: str, timeout_s: float) -> dict[str, Any] | None:
    """A target's ``/benchlab/info`` on the sampler's own kept-alive connection (apart from the
    load's), or None when it answered with another status. Errors propagate: a timeout tells a
    busy target from a gone one."""
    resp = _client().get(url, timeout=timeout_s)
    return resp.json() if resp.status_code == 200 else None


@dataclass(frozen=True)
class Samples:
    server_cpu_cores: float | None
    server_pss_mb: float | None  # peak over the step of the tree's summed PSS
    server_rss_mb: float | None  # peak over the step of the tree's summed RSS
    db_cpu_cores: float | None
    loadgen_cpu_cores: float | None
    loadgen_cpus: int
    client_bound: bool
    server_samples: int = 0
    lost: str | None = None  # why the server figures cannot be trusted (then they are None)
    upstream_cpu_cores: float | None = None  # the upstream service's CPU (upstream_url given)
    upstream_bound: bool = False  # the upstream used WAITING_BOUND_SHARE of its core or more


@dataclass(frozen=True)
class _Point:
    t: float
    value: float
    pid: int | None = None
    rss_mb: float = 0.0


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (a server's master and workers); [] once it is gone."""
    try:
        main = psutil.Process(pid)
        return [main, *main.children(recursive=True)]
    except psutil.Error:
        return []


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Who owns a run or a lab: pid, start time and PID namespace, so that a reused pid, or a
    live process of another container sharing ``/tmp``, is never taken for a dead owner's."""
    proc = psutil.Process(pid)
    return {"pid": proc.pid, "started": round(proc.create_time(), 2), "pidns": _pid_namespace()}


def owner_alive(identity: Any) -> bool | None:
    """Whether the process ``process_identity`` described still runs; None when it cannot be
    told from here (another PID namespace, a malformed record)."""
    try:
        pid, started, pidns = int(identity["pid"]), float(identity["started"]), identity["pidns"]
    except (TypeError, KeyError, ValueError):
        return None
    if pidns != _pid_namespace():
        return None
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.1
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds of a process, including its children that have exited and been reaped."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def loadgen_cpu_seconds() -> float:
    """This process (with reaped children such as finished wrk/k6 runs) plus the engines running
    now. Other children are left out on purpose: natively the targets and Postgres may be our
    children, and their CPU is not the client's. Engines are known by pid (``ENGINE_PIDS``):
    listing descendants would scan every process on the machine at each sample."""
    total = _cpu_seconds(psutil.Process())
    for pid in list(ENGINE_PIDS):
        with contextlib.suppress(psutil.Error):  # it finished (and was reaped) meanwhile
            total += _cpu_seconds(psutil.Process(pid))
    return total


def processes_cpu_seconds(procs: list[psutil.Process]) -> float | None:
    """Summed CPU seconds of a process set (e.g. the postmaster and its backends); None if empty."""
    total, seen = 0.0, False
    for p in procs:
        try:
            total += _cpu_seconds(p)
            seen = True
        except psutil.Error:
            continue
    return total if seen else None


def _rate(points: list[_Point]) -> float | None:
    """Cores used between the first point and the last one from the same process."""
    if len(points) < 2:
        return None
    first = points[0]
    same = [p for p in points[1:] if p.pid == first.pid]
    if not same or same[-1].t <= first.t:
        return None
    return max(0.0, (same[-1].value - first.value) / (same[-1].t - first.t))


def _lost(points: list[_Point]) -> str | None:
    """Why the server's samples do not describe one live process tree, or None when they do."""
    if not points:
        return f"no answer from {INFO_PATH}"
    pids = list(dict.fromkeys(p.pid for p in points))
    if len(pids) > 1:
        return f"target_pid changed from {pids[0]} to {pids[-1]}"
    if any(p.rss_mb <= 0 for p in points):
        return f"target process {pids[0]} reported no processes"
    return None


@functools.cache
def _client() -> httpx.Client:
    """The process's one sampling client; building one costs tens of ms of CPU (its TLS context)."""
    return httpx.Client(limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))


class StepSampler:
    """Samples server, database and load generator while a step runs.

    Use as ``with StepSampler(url, db_processes=...) as s: ...`` then ``s.result``, or call
    ``start()`` and ``stop()`` (which returns the Samples).
    """

    def __init__(
        self,
        target_url: str | None,
        db_processes: Callable[[], list[psutil.Process]] | None = None,
        *,
        interval_s: float = 0.5,
        request_timeout_s: float = 1.0,
        loadgen_cpus: int | None = None,
        upstream_url: str | None = None,
        bound_share: float = CLIENT_BOUND_SHARE,
    ) -> None:
        """``upstream_url``: also sample the upstream service (its ``/stats``); ``bound_share``:
        the share of the load generator's CPUs at which the step is client-bound."""
        self.info_url = info_url(target_url) if target_url else None
        self.db_processes = db_processes
        self.interval_s = interval_s
        self.request_timeout_s = request_timeout_s
        self.loadgen_cpus = loadgen_cpus or len(os.sched_getaffinity(0))
        self.result: Samples | None = None
        self.upstream_stats = upstream_url.rstrip("/") + UPSTREAM_STATS if upstream_url else None
        self.bound_share = bound_share
        self._upstream: list[_Point] = []
        self._server: list[_Point] = []
        self._rss: list[float] = []
        self._pss: list[float] = []
        self._db: list[_Point] = []
        self._loadgen: list[_Point] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _sample_server(self, timeout_s: float) -> None:
        if not self.info_url:
            return
        try:
            info = _info(self.info_url, timeout_s)
            t = time.monotonic()
            if info is None:
                return
            rss = float(info["rss_mb"])
            self._keep(self._server, _Point(t, float(info["cpu_seconds"]), info.get("target_pid"), rss))
            self._keep(self._rss, rss)
            if "pss_mb" in info:
                self._keep(self._pss, float(info["pss_mb"]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return

    def _sample_upstream(self, timeout_s: float) -> None:
        if not self.upstream_stats:
            return
        try:
            stats = _client().get(self.upstream_stats, timeout=timeout_s).json()
            self._keep(self._upstream, _Point(time.monotonic(), float(stats["cpu_seconds"]), stats.get("pid")))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return

    def _sample_local(self) -> None:
        if self.db_processes is not None:
            try:
                db = processes_cpu_seconds(self.db_processes())
            except Exception:  # a caller's process lister failing must not fail the step
                db = None
            if db is not None:
                self._keep(self._db, _Point(time.monotonic(), db))
        with contextlib.suppress(psutil.Error):
            self._keep(self._loadgen, _Point(time.monotonic(), loadgen_cpu_seconds()))

    def _keep(self, series: list[Any], value: Any) -> None:
        """Records a sample, unless it is the thread's and the sampler stopped meanwhile."""
        on_thread = threading.current_thread() is self._thread
        with self._lock:
            if not (on_thread and self._stop.is_set()):
                series.append(value)

    def _sample(self, timeout_s: float) -> None:
        self._sample_local()
        self._sample_upstream(timeout_s)
        self._sample_server(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(self.request_timeout_s)

    def start(self) -> StepSampler:
        self._sample(2 * self.request_timeout_s)
        self._thread = threading.Thread(target=self._loop, name="step-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Samples:
        """The step's figures. An intermediate sample still in flight is not waited for."""
        with self._lock:
            self._stop.set()
        # A server still draining the load's queued requests answers late; give it time.
        self._sample(FINAL_TIMEOUT_S)
        loadgen = _rate(self._loadgen)
        lost = _lost(self._server) if self.info_url else None
        self.result = Samples(
            server_cpu_cores=None if lost else _rate(self._server),
            server_pss_mb=max(self._pss) if self._pss and not lost else None,
            server_rss_mb=max(self._rss) if self._rss and not lost else None,
            db_cpu_cores=_rate(self._db),
            loadgen_cpu_cores=loadgen,
            loadgen_cpus=self.loadgen_cpus,
            client_bound=loadgen is not None and loadgen >= self.bound_share * self.loadgen_cpus,
            server_samples=len(self._server),
            lost=lost,
            upstream_cpu_cores=(upstream := _rate(self._upstream)),
            upstream_bound=upstream is not None and upstream >= WAITING_BOUND_SHARE,
        )
        return self.result

    def __enter__(self) -> StepSampler:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
