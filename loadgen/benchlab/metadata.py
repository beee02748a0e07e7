"""What a run records about where it ran: host, CPUs per role, versions, limits (``run.json``)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from benchlab import __version__
from benchlab.checkout import NoCommit, read_commit
from benchlab.config.settings import settings
from benchlab.cpus import RoleCpus, format_cpuset
from benchlab.measurement import ensure_open_files
from benchlab.targets import Target


def host_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "hostname": platform.node(),
    }


def git_commit() -> str:
    """The commit a run measured: ``BENCHLAB_GIT_COMMIT`` when given; in compose, the mounted
    checkout's (``BENCHLAB_CHECKOUT``, read without git); natively, ``git rev-parse``.
    Otherwise "unknown" with the reason."""
    given = settings().git_commit
    if given and given != "unknown":
        return given
    mounted = settings().checkout
    if mounted:
        try:
            return read_commit(Path(mounted))
        except NoCommit as why:
            return f"unknown ({why})"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown (git rev-parse: {exc})"
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return f"unknown (git rev-parse: {(out.stderr.strip().splitlines() or ['no answer'])[-1][:120]})"


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def target_info(target: Target, timeout_s: float = 5) -> dict[str, Any]:
    """Registry facts plus what the running server says of itself (``/benchlab/info``)."""
    info: dict[str, Any] = {
        "url": target.url,
        "framework": target.framework,
        "server": target.server,
        "worker_class": target.worker_class,
        "interface": target.interface,
        "style": target.style,
        "group": target.group,
    }
    try:
        reported = httpx.get(target.url + "/benchlab/info", timeout=timeout_s).json()
    except (httpx.HTTPError, ValueError):
        reported = {}
    info["workers"] = reported.get("workers")
    info["cpus"] = format_cpuset(reported["cpus"]) if reported.get("cpus") else None
    info["python"] = reported.get("python")
    info["python_build"] = reported.get("python_build")
    info["packages"] = reported.get("packages", {})
    return info


def database_info(dsn: str | None) -> dict[str, Any]:
    """The database a run used, asked of the server itself: version and pg_stat_statements."""
    if not dsn:
        return {"source": "none (no DSN)", "pg_stat_statements": False}
    try:
        with psycopg.connect(dsn, connect_timeout=5) as db:
            version = db.execute("SHOW server_version").fetchone()
            stats = db.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
    except psycopg.Error as exc:
        return {"source": "external", "error": str(exc).strip().splitlines()[0][:200]}
    return {"source": "external", "version": version[0] if version else None, "pg_stat_statements": bool(stats)}


def run_metadata(
    *, run_id: str, scenario: dict[str, Any], scenario_name: str, mode: str, cpus: RoleCpus,
    targets: dict[str, dict[str, Any]], engines: dict[str, Any], database: dict[str, Any], started_at: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "run_id": run_id,
        "scenario_name": scenario_name,
        "scenario": scenario,
        "mode": mode,
        "status": "running",
        "started_at": started_at,
        "finished_at": None,
        "benchlab_version": __version__,
        "git_commit": git_commit(),
        "host": host_info(),
        "cpus": {
            **cpus.describe(),
            "targets_reported": {name: t.get("cpus") for name, t in targets.items()},
        },
        "targets": targets,
        "engines": engines,
        "database": database,
        "nofile_limit": ensure_open_files(0),
        "python": platform.python_version(),
    }
