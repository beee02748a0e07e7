"""What one load-engine run measured, the same shape whichever engine (wrk or k6) ran it,
and the process plumbing both engines share (open-file limit, running, raw output)."""

from __future__ import annotations

import resource
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlab.errors import BenchlabError

# The one list of latency percentiles the lab keeps (key, percentile): p999 = 99.9th, p9999 = 99.99th.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p75", 75.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99),
)  # fmt: skip
# Latency figures every engine reports, in milliseconds, and the kinds of failed request.
LATENCY_KEYS: tuple[str, ...] = ("mean", "stdev", *(key for key, _ in PERCENTILES), "max")
ERROR_KINDS: tuple[str, ...] = ("connect", "read", "write", "timeout", "status")
# Their results.csv columns.
LATENCY_COLUMNS: tuple[str, ...] = tuple(f"latency_{k}_ms" for k in LATENCY_KEYS)
ERROR_COLUMNS: tuple[str, ...] = tuple(f"errors_{k}" for k in ERROR_KINDS)
# An open-loop step served its offered rate only if it delivered at least this share of it and
# k6 dropped at most this share of its iterations; otherwise its latency is an overloaded server's.
MIN_DELIVERED_SHARE = 0.95
MAX_DROPPED_SHARE = 0.01
FD_RESERVE = 64  # descriptors an engine needs besides its sockets (epoll, pipes, std streams, libs)
ENGINE_PIDS: set[int] = set()  # engines running now (see run_engine)


@dataclass
class Measurement:
    """Counts and latency of one run. ``requests`` are completed responses (any status);
    ``duration_s`` is the engine's own measured run time, not the nominal one, so
    ``rps`` is honest even when the engine overran or was cut short.
    ``latency_ms`` values may be None where an engine cannot give a figure (no responses)."""

    requests: int
    duration_s: float
    bytes: int
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_timeout: int
    errors_status: int
    latency_ms: dict[str, float | None]
    offered_rps: float | None = None
    dropped: int | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def overloaded(self) -> bool | None:
        """Open loop only: whether the server fell short of the offered rate (None for closed loop)."""
        if self.offered_rps is None:
            return None
        dropped = self.dropped or 0
        iterations = self.requests + dropped
        short = self.rps < MIN_DELIVERED_SHARE * self.offered_rps
        return short or (iterations > 0 and dropped > MAX_DROPPED_SHARE * iterations)

    @property
    def socket_errors(self) -> int:
        return self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout


def error_counts(errors: Mapping[str, Any]) -> dict[str, int]:
    """An engine's ``{"connect": n, ...}`` as Measurement's ``errors_*`` fields."""
    return {f"errors_{kind}": int(errors[kind]) for kind in ERROR_KINDS}


def ensure_open_files(connections: int, what: str = "wrk") -> int:
    """Raises the soft open-file limit to the hard one; an engine needing more sockets than
    that fails here with the fix, rather than mid-run with a pile of connect errors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise BenchlabError(
            f"{what} needs {needed} open files for {connections} connections but the open-file "
            f"limit is {soft}: raise it (`ulimit -n {needed}` as root, or `ulimits: nofile:` "
            "in compose.yaml) or lower the concurrency"
        )
    return soft


def run_engine(
    cmd: Sequence[str], *, limit_s: float, raw_path: Path | None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs an engine to completion (bounded by ``limit_s``) and keeps its raw output. While it
    runs its pid is in ``ENGINE_PIDS``, so the sampler reads its CPU without scanning /proc."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as child:
        ENGINE_PIDS.add(child.pid)
        try:
            stdout, stderr = child.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            child.communicate()
            raise BenchlabError(f"{Path(cmd[0]).name} did not finish within {limit_s:.0f} s") from exc
        finally:
            ENGINE_PIDS.discard(child.pid)
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    if raw_path is not None:
        save_raw(raw_path, cmd, proc.stdout, proc.stderr)
    return proc


def save_raw(raw_path: Path, cmd: Sequence[str], stdout: str, stderr: str) -> None:
    """The engine's own output, kept beside the results so any figure can be traced back."""
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    raw_path.write_text(f"$ {shlex.join(cmd)}\n{stdout}" + (f"\n--- stderr ---\n{stderr}" if stderr else ""))


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
