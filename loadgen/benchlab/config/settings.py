"""Every ``BENCHLAB_*`` variable the lab reads, in one object (the services read their own few,
``target_kit``, in their process). A module asks ``settings()`` (or is handed a ``Settings``
built from a test's mapping) instead of reading the environment itself, so the variables, their
defaults and what a bad value says are written once, here, and the README's table can follow it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "BENCHLAB_"


@dataclass(frozen=True)
class Settings:
    env: Mapping[str, str] = field(repr=False)

    def _get(self, name: str, default: str = "") -> str:
        return self.env.get(PREFIX + name, default)

    # --- the lab and its run
    @property
    def mode(self) -> str:
        """``compose`` (the loadgen container), else ``external`` (targets someone else started)."""
        return self._get("MODE", "external")

    @property
    def dsn(self) -> str | None:
        return self._get("DSN") or None

    @property
    def out(self) -> str:
        return self._get("OUT", "results")

    @property
    def out_as_set(self) -> str:
        """``BENCHLAB_OUT`` only when set (compose sets it to the container's results path)."""
        return self._get("OUT")

    @property
    def results_host(self) -> str:
        """Where compose mounted ``out`` from on the host (progress lines show that path)."""
        return self._get("RESULTS_HOST")

    @property
    def ready_timeout_s(self) -> float | None:
        raw = self._get("READY_TIMEOUT")
        return float(raw) if raw else None

    @property
    def sample_db_on_host(self) -> bool:
        """Compose: the database's processes are visible (host PID namespace) and sampled."""
        return self._get("SAMPLE_DB") == "host"

    @property
    def root(self) -> str:
        return self._get("ROOT")

    @property
    def git_commit(self) -> str:
        return self._get("GIT_COMMIT").strip()

    @property
    def checkout(self) -> str:
        """The checkout compose mounts into the loadgen (its commit is read from it, without git)."""
        return self._get("CHECKOUT")

    @property
    def upstream_url(self) -> str | None:
        """Where the targets and the loadgen find the upstream service, outside ``--native``."""
        return self._get("UPSTREAM_URL") or None

    @property
    def upstream_port(self) -> str:
        """The upstream's port where the lab starts it on a host (compose: the same variable)."""
        return self._get("UPSTREAM_PORT", "8079")

    @property
    def db_stats_port(self) -> str:
        """``hosts.dbstats``' port on the database host, for a load generator on another host."""
        return self._get("DB_STATS_PORT", "8078")

    @property
    def db_stats_url(self) -> str | None:
        """The database's CPU and memory over HTTP (``hosts.dbstats``), for a loadgen on another host."""
        return self._get("DB_STATS_URL") or None

    @property
    def image_tag(self) -> str:
        """The tag of the lab's images (compose.yaml's ``${BENCHLAB_IMAGE_TAG:-local}``)."""
        return self._get("IMAGE_TAG", "local")

    # --- tools and interpreters
    @property
    def k6(self) -> str:
        return self._get("K6")

    @property
    def py_spy(self) -> str:
        return self._get("PY_SPY")

    @property
    def profiler_sidecars(self) -> bool:
        """Compose with compose.profile.yaml: each target's py-spy runs in its sidecar."""
        return self._get("PROFILER") == "sidecar"

    def profile_port(self, env_key: str) -> str:
        """Where a target's profiler sidecar listens (compose.profile.yaml)."""
        return self._get(f"PROFILE_PORT_{env_key}")

    @property
    def venvs(self) -> Path:
        base = self.env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(self._get("VENVS") or Path(base) / "benchlab" / "venvs")

    @property
    def service_python(self) -> str:
        return self._get("SERVICE_PYTHON")

    def python(self, version: str) -> str:
        """``BENCHLAB_PYTHON_3_13`` for ``3.13``, ``BENCHLAB_PYTHON_3_14T`` for ``3.14t``."""
        return self.env.get(python_key(version), "")

    # --- the database
    @property
    def pg_bindir(self) -> str:
        return self._get("PG_BINDIR")

    @property
    def db_user(self) -> str:
        return self._get("DB_USER", "benchmarkdbuser")

    @property
    def db_password(self) -> str:
        return self._get("DB_PASSWORD", "benchmarkdbpass")

    @property
    def db_name(self) -> str:
        return self._get("DB_NAME", "hello_world")

    # --- targets and CPUs
    @property
    def target_host(self) -> str:
        return self._get("TARGET_HOST", "127.0.0.1")

    def target_port(self, env_key: str) -> str:
        return self._get(f"PORT_{env_key}")

    def target_url(self, env_key: str) -> str:
        return self._get(f"URL_{env_key}")

    @property
    def workers(self) -> str:
        return self._get("WORKERS")

    def cpus(self, role: str) -> str:
        return self._get(f"CPUS_{role.upper()}")


def python_key(version: str) -> str:
    return PREFIX + "PYTHON_" + version.upper().replace(".", "_")


def settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process (its environment now), or of ``env``."""
    return Settings(os.environ if env is None else env)
