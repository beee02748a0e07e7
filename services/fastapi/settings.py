"""The service environment contract, read in one place for the launcher and the app.

Every benchlab service honours the same variables (see the common brief); a bad value is a
user error reported as one line, never a traceback.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "postgresql://benchmarkdbuser:benchmarkdbpass@127.0.0.1:5432/hello_world"
DEFAULT_MAX_DB_CONNECTIONS = 2000  # Postgres max_connections in db/postgresql.conf
# Share of the connection budget the pools may use; the rest is left for the loadgen's
# pg_stat_statements reads, psql sessions and the other targets' start-up.
DB_BUDGET_SHARE = 0.9
# Per-worker pool. TechEmpower's FastAPI uses min(1800 / cpu_count, 160), sized for its 28-core
# database host. Measured here (2 shared cores, /db and /queries at 512 connections): 4, 8 and 16
# perform alike, 32 worse, 160 about half the throughput -- hundreds of busy backends only
# context-switch. 16 keeps headroom for a database on another host (more round-trip time).
POOL_CAP = 16


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def database_address(url: str) -> str:
    """``host:port`` of the database, for messages that say what we wait for."""
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"


def workers() -> int:
    """BENCHLAB_WORKERS, else the CPUs this process may run on (not the host's count)."""
    return env_int("BENCHLAB_WORKERS", len(os.sched_getaffinity(0)))


def pool_max_size(n_workers: int) -> int:
    """Per-worker pool size: workers x pool stays inside the connection budget with a reserve."""
    budget = env_int("BENCHLAB_MAX_DB_CONNECTIONS", DEFAULT_MAX_DB_CONNECTIONS)
    fair_share = max(1, int(budget * DB_BUDGET_SHARE) // n_workers)
    return env_int("BENCHLAB_DB_POOL", min(fair_share, POOL_CAP))
