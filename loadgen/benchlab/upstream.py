"""The upstream service in native runs: started, watched and stopped like Postgres.

``services/upstream/upstream.py`` is what every target's ``GET /upstream?ms=N`` waits on
(benchlab's own ``upstream`` test). Natively it runs from its own pinned venv on a free port,
pinned to the upstream's CPU set, dying with the thread that started it; in compose it is the
``upstream`` service. Either way the lab reads it over HTTP (``/stats``), so sampling works
where its process cannot be seen: ``UpstreamClient`` is that view, ``Upstream`` the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchlab.errors import BenchlabError
from benchlab.ports import check_port_free, free_port
from benchlab.postgres import death_signal, owned_env
from benchlab.sampling import process_tree
from benchlab.venvs import service_python

ENV_URL = "BENCHLAB_UPSTREAM_URL"  # where targets (UPSTREAM_URL) and the loadgen find it, outside --native
READY_S = 30.0


@dataclass(frozen=True)
class UpstreamClient:
    """The lab's view of a running upstream: its URL and its counters."""

    url: str

    def stats(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """``{"requests", "cpu_seconds", "pid", "open"}`` as the upstream reports them."""
        return httpx.get(self.url + "/stats", timeout=timeout_s).json()

    def reset(self, timeout_s: float = 2.0) -> None:
        httpx.delete(self.url + "/stats", timeout=timeout_s).raise_for_status()

    def slow(self, ms: int) -> None:
        """Every wait takes ``ms`` longer from now on (0: back to normal)."""
        httpx.put(self.url + "/slow", params={"ms": ms}, timeout=2.0).raise_for_status()

    def answers(self) -> bool:
        try:
            return httpx.get(self.url + "/stats", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Upstream:
    """The native upstream process; ``down()``/``up()`` and ``freeze()``/``thaw()`` are for the
    tests that prove a target survives a dead or frozen upstream."""

    port: int
    argv: list[str]
    cwd: Path
    cpus: set[int] | None
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> UpstreamClient:
        return UpstreamClient(self.url)

    def processes(self) -> list[psutil.Process]:
        return process_tree(self.process.pid) if self.process and self.process.poll() is None else []

    def up(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        check_port_free(self.port, "the upstream")
        arm, cpus = death_signal(signal.SIGTERM), self.cpus

        def child_setup() -> None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            if cpus:
                os.sched_setaffinity(0, cpus)
            arm()

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=child_setup,
            )  # fmt: skip
        deadline = time.monotonic() + READY_S
        while not self.client.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
                self.down()
                raise BenchlabError(f"the upstream did not start on port {self.port}: {tail or 'no output'}")
            time.sleep(0.05)

    def down(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (``docker pause``)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)


def start_upstream(root: Path, log_dir: Path, cpus: set[int] | None, log: Any = print) -> Upstream:
    """The upstream from ``root/services/upstream`` on a free port, ready when this returns."""
    service = root / "services" / "upstream"
    python = service_python(service, log)
    port = free_port()
    env = owned_env()
    env.update(BENCHLAB_UPSTREAM_PORT=str(port), BENCHLAB_HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    upstream = Upstream(port, [python, "upstream.py"], service, cpus, log_dir / "upstream.log", env=env)
    upstream.up()
    return upstream
