"""What every target does the same way: the service environment contract, a launcher's prologue
(settings, a free port, the bounded wait for the database), pool sizing, dying with the master,
and ``GET /benchlab/info``.

One file for every server the lab measures, so targets differ only where their framework or
server does: the services import it as ``target_kit`` (each image copies this file in; native
runs put a copy on the server's ``PYTHONPATH``), the baseline server as ``benchlab.target_kit``.
It therefore imports nothing from ``benchlab``, and no database driver: needs only the standard
library and psutil.

The environment contract (compose and the native harness set it; see .env.example):
``BENCHLAB_PORT`` (required: the registry, ``targets.toml``, is the one place ports are
written), ``BENCHLAB_HOST``, ``DATABASE_URL``, ``BENCHLAB_WORKERS``, ``BENCHLAB_DB_POOL``,
``BENCHLAB_MAX_DB_CONNECTIONS``, ``BENCHLAB_DB_WAIT_S``. A bad value is ``SettingsError``: the
launcher prints it as one line and exits 2.

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

import ctypes
import os
import platform
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any, NoReturn
from urllib.parse import urlsplit

import psutil

DEFAULT_DATABASE_URL = "postgresql://benchmarkdbuser:benchmarkdbpass@127.0.0.1:5432/hello_world"
DEFAULT_MAX_DB_CONNECTIONS = 2000  # Postgres max_connections in db/postgresql.conf
# Share of the connection budget the pools may use; the rest is left for the verifier's
# pg_stat_statements reads, psql sessions and the other targets' start-up.
DB_BUDGET_SHARE = 0.9
DEFAULT_DB_WAIT_S = 60
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_int(name: str, default: int | None, minimum: int = 1) -> int:
    """An integer setting; ``default`` None makes it required."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        if default is None:
            raise SettingsError(f"{name} is not set")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def host() -> str:
    return os.environ.get("BENCHLAB_HOST") or "127.0.0.1"


def port() -> int:
    """Where to listen: always given by whoever starts the target (from the registry)."""
    value = env_int("BENCHLAB_PORT", None)
    if value > 65535:
        raise SettingsError(f"BENCHLAB_PORT must be a TCP port (1-65535), got {value}")
    return value


def bind_address() -> str:
    """``host:port`` as servers take it (brackets around an IPv6 host)."""
    h = host()
    return f"[{h}]:{port()}" if ":" in h else f"{h}:{port()}"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def database_address(url: str) -> str:
    """``host:port/dbname`` of the database, for messages that say what we wait for."""
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}{parts.path}"


def workers() -> int:
    """BENCHLAB_WORKERS, else the CPUs this process may run on (not the host's count)."""
    return env_int("BENCHLAB_WORKERS", len(os.sched_getaffinity(0)))


def pool_size(n_workers: int, cap: int) -> int:
    """Per-worker pool: BENCHLAB_DB_POOL, else a fair share of the connection budget up to
    ``cap`` (each framework measured its own); workers x pool must fit in the budget."""
    budget_total = env_int("BENCHLAB_MAX_DB_CONNECTIONS", DEFAULT_MAX_DB_CONNECTIONS)
    budget = int(budget_total * DB_BUDGET_SHARE)
    pool = env_int("BENCHLAB_DB_POOL", max(1, min(cap, budget // n_workers)))
    if n_workers * pool > budget:
        raise SettingsError(
            f"{n_workers} workers x {pool} connections exceeds {budget} "
            f"(BENCHLAB_MAX_DB_CONNECTIONS={budget_total} less a {1 - DB_BUDGET_SHARE:.0%} reserve)"
        )
    return pool


def wait_for_database(probe: Callable[[str, float], None], name: str) -> None:
    """The launcher's bounded wait, before any worker starts (so none crash-loops): ``probe(url,
    timeout_s)`` connects once and raises on failure. Prints what it waits for; SystemExit(1)
    after BENCHLAB_DB_WAIT_S."""
    url, wait_s = database_url(), env_int("BENCHLAB_DB_WAIT_S", DEFAULT_DB_WAIT_S, minimum=0)
    where = database_address(url)
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        try:
            probe(url, max(0.5, min(2.0, left)))
            return
        except Exception as exc:  # the driver's errors: whatever it raises, the answer is "not yet"
            left = deadline - time.monotonic()
            error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if left <= 0:
                print(f"{name}: database {where} unavailable after {wait_s}s: {error}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            print(f"waiting for database {where} ... ({left:.0f}s left)", file=sys.stderr, flush=True)
            time.sleep(min(1.0, left))


MAX_QUERIES = 500


def clamp_queries(raw: str | None) -> int:
    """A query-count parameter, as TFB's lenient rule reads it: missing, empty, non-integer or
    < 1 gives 1; > 500 gives 500 (never an error). The TechEmpower-style apps share this copy;
    the verifier keeps its own (benchlab.contract) as an independent oracle."""
    try:
        n = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1
    return 1 if n < 1 else min(n, MAX_QUERIES)


# benchlab's own upstream test (not TechEmpower's): GET /upstream?ms=N waits on the upstream
# service (UPSTREAM_URL) for N ms. N is read as leniently as TFB reads query counts: missing,
# empty or non-integer gives the default, clamped to 0..MAX_WAIT_MS.
DEFAULT_WAIT_MS = 20
MAX_WAIT_MS = 10_000
# A target gives the upstream its wait plus this long to answer, then says 504: long enough for
# queueing at thousands of connections, short enough that a frozen upstream never hangs a client.
UPSTREAM_GRACE_S = 5.0
# Connections each worker's upstream client may hold: above any level the lab sends (4,096),
# so for async and gevent stacks the client's pool is never the first limit.
UPSTREAM_POOL = 10_000
UPSTREAM_UNAVAILABLE = b'{"error":"upstream unavailable"}'  # 503: refused, reset, not there
UPSTREAM_TIMEOUT = b'{"error":"upstream timeout"}'  # 504: no answer within the wait + grace


def clamp_wait_ms(raw: str | None) -> int:
    """``ms=`` of /upstream: missing, empty or non-integer gives DEFAULT_WAIT_MS; clamped to
    0..MAX_WAIT_MS (never an error). The verifier keeps its own copy (benchlab.contract)."""
    try:
        n = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_WAIT_MS
    return max(0, min(n, MAX_WAIT_MS))


def upstream_url() -> str:
    """Where the upstream service listens (the harness and compose set UPSTREAM_URL)."""
    return (os.environ.get("UPSTREAM_URL") or "http://127.0.0.1:8079").rstrip("/")


def upstream_timeout_s(ms: int) -> float:
    return ms / 1000 + UPSTREAM_GRACE_S


def fail(name: str, message: str, code: int) -> NoReturn:
    """A launcher's one-line refusal."""
    print(f"{name}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _exit_on_signal(signum: int, frame: object) -> None:
    """Until the server installs its own handlers: exit. As PID 1 in a container, a
    default-handled SIGTERM would be ignored and `docker stop` would hang for its whole timeout
    while the launcher waits for the database."""
    sys.exit(128 + signum)


def port_refusal(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, in the OS's words, or None when it can: the
    launchers' check and the harness's (benchlab.ports) are this one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def start_master(name: str, probe: Callable[[str, float], None], **exports: str) -> tuple[str, int, int]:
    """A launcher's prologue, before its server starts any worker: the settings checked (exit 2
    and one line if bad), the port free, the bounded database wait (exit 1), then the master's
    pid, the worker count and ``exports`` put in the environment every worker inherits (for
    /benchlab/info and pool sizes). Returns host, port and workers."""
    try:
        n_workers = workers()
        where, at = host(), port()
        env_int("BENCHLAB_DB_WAIT_S", DEFAULT_DB_WAIT_S, minimum=0)
        # Each app sizes its pool under its own cap; whether workers x pool fits the budget does
        # not depend on the cap, so a bad budget is refused here, once, with cap 1.
        pool_size(n_workers, cap=1)
    except SettingsError as exc:
        fail(name, str(exc), 2)
    # One clear line for a taken port, before a server reports it from inside its workers (or,
    # binding with SO_REUSEPORT as Hypercorn does with several workers, shares it silently).
    if refusal := port_refusal(where, at):
        fail(name, f"cannot listen on {where}:{at}: {refusal}", 2)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    wait_for_database(probe, name)
    os.environ.update(BENCHLAB_MASTER_PID=str(os.getpid()), BENCHLAB_WORKERS=str(n_workers), **exports)
    return where, at, n_workers


# A frozen database (SIGSTOP, `docker pause`) refuses nothing and its kernel still ACKs every
# packet: TCP keepalive or tcp_user_timeout never fire, and a query waits forever. A pool or
# query bound short enough to answer within 2 s would cut legitimate waits under full load (a
# request queues seconds for a pooled connection at 512 clients). What a frozen database does
# that a busy one never does is fall silent: no query of this worker completes at all. So a
# request waiting on the database for STALL_S while the worker, waiting on it, has heard
# nothing for STALL_S of checks STALL_CHECK_S apart gets its 503: within STALL_S + STALL_CHECK_S.
STALL_S = 1.0
STALL_CHECK_S = 0.25


class SilenceWatch:
    """A worker's ear on the database: when it last answered, and who is waiting on it.

    The app calls ``heard()`` when a query completes and keeps ``waiting`` (a waiter: its start)
    while a request waits on the database; its own loop (gevent or asyncio) calls ``check()``
    every STALL_CHECK_S and ends the waits it returns. Only on-time checks count: a late one
    means a starved event loop, whose answers may sit unread in sockets, so it restarts the count.
    """

    def __init__(self) -> None:
        self.heard_at = time.monotonic()
        self.waiting: dict[Any, float] = {}
        self._quiet = 0.0
        self._last_check, self._last_heard = time.monotonic(), self.heard_at

    def heard(self) -> None:
        self.heard_at = time.monotonic()

    def check(self) -> list[Any]:
        """The waiters to give up on now: older than STALL_S, with the database silent as long."""
        now = time.monotonic()
        on_time = now - self._last_check < 2 * STALL_CHECK_S
        if self.waiting and on_time and self.heard_at == self._last_heard:
            self._quiet += now - self._last_check
        else:
            self._quiet = 0.0
        self._last_check, self._last_heard = now, self.heard_at
        if self._quiet < STALL_S:
            return []
        return [waiter for waiter, started in list(self.waiting.items()) if now - started >= STALL_S]


def die_with_master(master_pid: int) -> None:
    """In a worker (Linux): ask the kernel for SIGKILL when the master dies, even by SIGKILL, so
    a killed launcher leaves nothing serving on its port. Servers' workers do not notice on
    their own. SIGKILL, not SIGTERM: with the master gone nothing bounds a graceful stop, and a
    worker that cannot finish one (Granian's can hang in its runtime's teardown, granian#875; a
    frozen one never runs it) would serve on. The signal follows the thread that forked us (the
    master's main thread for every supervisor here); a master that died before the call never
    sends it, hence the check."""
    if sys.platform != "linux" or os.getpid() == master_pid:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != master_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def master_pid() -> int:
    """The launcher's pid, exported before workers start; this process when run bare."""
    raw = os.environ.get("BENCHLAB_MASTER_PID", "")
    return int(raw) if raw.isdigit() else os.getpid()


def installed_packages() -> dict[str, str]:
    """Every distribution installed in this environment, as the interpreter sees it."""
    found = {(dist.metadata["Name"] or "").lower(): dist.version for dist in metadata.distributions()}
    return dict(sorted((name, version) for name, version in found.items() if name))


_SAMPLE_TRIES = 4  # walks per sample before one that skips what vanished


def _tree_cpu(root_pid: int) -> tuple[float, list[psutil.Process]]:
    """CPU seconds of ``root_pid`` and its descendants, and those processes (none if it is gone).

    A worker reaped between its parent's read and its own is in no one's times, which would dip
    the counter by a whole worker, so such a walk is taken again.
    """
    procs: list[psutil.Process] = []
    cpu = 0.0
    for attempt in range(_SAMPLE_TRIES):
        try:
            root = psutil.Process(root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0, []
        cpu, vanished = 0.0, False
        for proc in procs:
            try:
                t = proc.cpu_times()  # a zombie, dead but not yet reaped, still has its times
            except psutil.Error:
                vanished = True
                continue
            cpu += t.user + t.system + t.children_user + t.children_system
        if not vanished or attempt == _SAMPLE_TRIES - 1:
            break
    return cpu, procs


def tree_cpu_seconds(root_pid: int) -> float:
    """The CPU part of ``tree_usage`` alone, for a caller timing a run (reading PSS is slow)."""
    return round(_tree_cpu(root_pid)[0], 3)


def tree_usage(root_pid: int) -> dict[str, float]:
    """``cpu_seconds``, ``rss_mb`` and ``pss_mb`` summed over ``root_pid`` and its descendants:
    CPU read for the whole tree before any memory (reading PSS is slow)."""
    cpu, procs = _tree_cpu(root_pid)
    rss = pss = 0.0
    for proc in procs:
        try:
            mem = proc.memory_full_info()
        except psutil.Error:
            continue  # a zombie has no memory map
        rss += mem.rss
        pss += getattr(mem, "pss", mem.rss)
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
            "python_build": "free-threading" if sysconfig.get_config_var("Py_GIL_DISABLED") else "default",
            "packages": installed_packages(),
        }

    def payload(self) -> dict[str, Any]:
        # Asked now, not at start: an extension imported later may have turned the GIL back on.
        gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
        return {**self.static, "gil_enabled": gil, **tree_usage(self.pid)}
