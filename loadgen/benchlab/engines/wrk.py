"""Closed-loop load with wrk, run the way TechEmpower runs it.

Each run is one wrk process with a Lua ``done()`` hook (``scripts/report.lua``) that prints a
single JSON line: counts, socket errors, non-2xx/3xx responses and latency percentiles; the
same script sets the request's method and body. Plaintext-style pipelining uses
``scripts/pipeline.lua`` (depth N requests per write), as
TechEmpower's own ``pipeline.lua`` does. Requests per second are divided by the duration
wrk measured, not by the nominal one.

wrk's own rules, kept as they are: durations and ``--timeout`` are whole seconds; a
"timeout" is a response that arrived later than ``--timeout`` (it gets no latency), and
requests still unanswered when the run ends are not counted anywhere; with pipelining,
one latency is recorded per batch (write to the batch's last response).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from benchlab.engines.base import DEFAULT_TIMEOUT_S, SCRIPTS, Engine, Load, Request
from benchlab.errors import BenchlabError
from benchlab.measurement import PERCENTILES, Measurement, ensure_open_files, error_counts, last_line, run_engine
from benchlab.metadata import tool_version
from benchlab.model.modes import LoadMode

if TYPE_CHECKING:
    from benchlab.config.scenario import PlannedStep

REPORT_LUA = SCRIPTS / "report.lua"
PIPELINE_LUA = SCRIPTS / "pipeline.lua"
_PERCENTILES = {key: f"{pct:g}" for key, pct in PERCENTILES}  # report.lua's keys: "50" ... "99.99"


def find_wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        raise BenchlabError(
            "wrk not found: install it with `apt-get install wrk` (Debian/Ubuntu), "
            "or use the loadgen container, which has it"
        )
    return path


def client_cpus() -> int:
    """CPUs this process may run on (its affinity), not the host's count."""
    return len(os.sched_getaffinity(0))


def threads_for(connections: int) -> int:
    """TechEmpower's rule: one wrk thread per client CPU, never more threads than connections."""
    return max(1, min(connections, client_cpus()))


def wrk_command(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int,
    pipeline: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body_file: Path | None = None,
) -> list[str]:
    """The wrk command line. wrk takes durations and timeouts in whole seconds only, so the
    duration is rounded (at least 1 s) and the timeout rounded up; the measured duration
    in the result is what counts."""
    cmd = [find_wrk(), "-t", str(threads), "-c", str(connections),
           "-d", f"{whole_seconds(duration_s)}s", "--timeout", f"{max(1, math.ceil(timeout_s))}s",
           "-H", "Connection: keep-alive"]  # fmt: skip
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    request = [method, str(body_file)] if body_file else ([method] if method != "GET" else [])
    if pipeline > 1:
        cmd += ["-s", str(PIPELINE_LUA), url, "--", str(pipeline), *request]
    else:
        cmd += ["-s", str(REPORT_LUA), url, *(["--", *request] if request else [])]
    return cmd


def whole_seconds(duration_s: float) -> int:
    """The duration wrk will actually be asked for."""
    return max(1, round(duration_s))


def parse_wrk_output(stdout: str) -> Measurement:
    """The Measurement from wrk's stdout: the JSON line report.lua's done() printed."""
    for line in reversed(stdout.splitlines()):
        if line.startswith('{"benchlab":"wrk"'):
            data = json.loads(line)
            break
    else:
        raise ValueError("no benchlab summary line in wrk output")
    lat = data["latency_us"]
    pct = lat["percentiles"]
    latency: dict[str, float | None] = {k: lat[k] / 1000 for k in ("mean", "stdev", "max")}
    # wrk's percentile walk can come up empty and answer 0 (wg/wrk#236, #354; seen with
    # pipelining): a 0 µs latency beside a non-zero max is not a measurement, so it is left out.
    latency.update({key: (pct[p] / 1000 if pct[p] or not lat["max"] else None) for key, p in _PERCENTILES.items()})
    return Measurement(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        bytes=int(data["bytes"]),
        **error_counts(data["errors"]),
        latency_ms=latency,
    )


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int,
    pipeline: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    raw_path: Path | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Measurement:
    """One wrk run against ``url`` (full URL incl. path); its raw output goes to ``raw_path``."""
    if connections < 1 or threads < 1 or pipeline < 1 or duration_s <= 0:
        raise BenchlabError(
            f"wrk: connections, threads and pipeline must be >= 1 and duration > 0 "
            f"(got c={connections} t={threads} pipeline={pipeline} d={duration_s})"
        )
    ensure_open_files(connections)
    with _body_file(body) as body_file:
        cmd = wrk_command(url, connections=connections, duration_s=duration_s, threads=min(threads, connections),
                          pipeline=pipeline, timeout_s=timeout_s, headers=headers, method=method,
                          body_file=body_file)  # fmt: skip
        proc = run_engine(cmd, limit_s=duration_s + timeout_s + 30, raw_path=raw_path)
    try:
        m = parse_wrk_output(proc.stdout)
    except (ValueError, KeyError) as exc:
        raise BenchlabError(f"wrk failed (exit {proc.returncode}): {last_line(proc)}") from exc
    if pipeline > 1:
        # wrk times a pipelined batch, not a request, and its coordinated-omission correction
        # assumes one response per request: it counts synthetic samples it never lists, so its
        # mean and percentiles are wrong (low, or 0: wg/wrk#236). Only the max means something.
        m.latency_ms = {k: (v if k == "max" else None) for k, v in m.latency_ms.items()}
    return m


@contextmanager
def _body_file(body: bytes | None) -> Iterator[Path | None]:
    """wrk's Lua reads a request body from a file: binary-safe, and no length limit on argv."""
    if body is None:
        yield None
        return
    with tempfile.NamedTemporaryFile(prefix="benchlab-body-", suffix=".bin") as fh:
        fh.write(body)
        fh.flush()
        yield Path(fh.name)


class Wrk(Engine):
    """Closed loop: ``load.connections`` connections, one wrk thread per client CPU."""

    name: ClassVar[str] = "wrk"
    mode: ClassVar[LoadMode] = LoadMode.CLOSED
    primes: ClassVar[bool] = True
    sets_peak: ClassVar[bool] = True

    def load_for(self, step: PlannedStep, timeout_s: float, peak_rps: float | None) -> Load:
        return Load(duration_s=step.duration_s, timeout_s=timeout_s, connections=step.concurrency,
                    pipeline=step.pipeline)  # fmt: skip

    def connections(self, step: PlannedStep) -> int:
        return step.concurrency

    def label(self, step: PlannedStep, load: Load) -> str:
        return f"c={load.connections}" + (f" pipeline={load.pipeline}" if load.pipeline > 1 else "")

    def run(self, request: Request, load: Load, raw_path: Path | None = None) -> Measurement:
        return run_wrk(request.url, connections=load.connections, duration_s=load.duration_s,
                       threads=threads_for(load.connections), pipeline=load.pipeline, timeout_s=load.timeout_s,
                       raw_path=raw_path, headers=request.headers, method=request.method,
                       body=request.body)  # fmt: skip

    def provenance(self) -> str:
        return tool_version([find_wrk(), "-v"])


class ProfiledWrk(Wrk):
    """Closed loop with py-spy attached to the target (``--profile``): wrk's load, but its step
    is no measurement, so it neither primes nor sets the peak open-loop rates scale from."""

    name: ClassVar[str] = "wrk-profiled"
    mode: ClassVar[LoadMode] = LoadMode.PROFILED
    primes: ClassVar[bool] = False
    sets_peak: ClassVar[bool] = False
