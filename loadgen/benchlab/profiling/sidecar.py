"""The loadgen's side of profiling under compose: each target's sidecar agent found and checked
before the run (reachable, allowed to read its target, the target not free-threaded), and
``AgentRecorder``, the ``Recorder`` that records through it over loopback HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.profiling.agent import AGENT_HOST, AGENT_PORT_OFFSET, PROBING
from benchlab.profiling.pyspy import STOP_TIMEOUT_S
from benchlab.targets import Target

OVERLAY_COMMAND = "PROFILE=1 docker compose -f compose.yaml -f compose.profile.yaml up --build --exit-code-from loadgen"
REACH_S = 30.0  # a matrix target's sidecar starts beside it; the core ones before the loadgen
PROBE_S = 150.0  # longer than the agent's own probe window


def agent_port(target: Target) -> int:
    """``BENCHLAB_PROFILE_PORT_<TARGET>``, else the target's registry port + the offset."""
    raw = settings().profile_port(target.env_key)
    return int(raw) if raw else target.port + AGENT_PORT_OFFSET


def agent_url(target: Target) -> str:
    return f"http://{AGENT_HOST}:{agent_port(target)}"


def _status(target: Target) -> dict[str, Any]:
    """The agent's status once its probe has a verdict; one-line refusals when it has none."""
    url = agent_url(target)
    reach_by, probe_by = time.monotonic() + REACH_S, time.monotonic() + PROBE_S
    while True:
        try:
            status: dict[str, Any] = httpx.get(url + "/status", timeout=10).json()
        except (httpx.HTTPError, ValueError) as exc:
            if time.monotonic() > reach_by:
                raise BenchlabError(
                    f"PROFILE=1: {target.name}'s profiler sidecar does not answer on {url} "
                    f"({exc or type(exc).__name__}); start the lab with the profiling overlay: `{OVERLAY_COMMAND}`"
                ) from exc
        else:
            if status.get("probe") != PROBING or time.monotonic() > probe_by:
                return status
        time.sleep(1)


def check_sidecars(targets: list[Target], target_meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Refuses, before the run, a target py-spy cannot profile in compose; returns what run.json
    records of the profiler (the version the sidecars run)."""
    versions, granted = set(), {}
    for t in targets:
        if target_meta.get(t.name, {}).get("python_build") == "free-threading":
            raise BenchlabError(f"PROFILE=1: {t.name} runs on a free-threaded Python, which py-spy cannot read; "
                                "profile it on a build with the GIL (TARGET_PYTHON_IMAGE)")  # fmt: skip
        status = _status(t)
        if status.get("probe") != "ok":
            raise BenchlabError(
                f"PROFILE=1: {t.name}'s profiler sidecar may not read its processes ({status.get('probe')}); it "
                "needs the SYS_PTRACE capability compose.profile.yaml grants it, and no seccomp or AppArmor rule "
                "against ptrace"
            )
        versions.add(status.get("py_spy", "unknown"))
        granted[t.name] = {"uid": status.get("uid"), "capabilities": status.get("capabilities")}
    return {"version": ", ".join(sorted(versions)), "sidecars": granted}


@dataclass
class AgentRecorder:
    """A recording by a target's sidecar: started and stopped over HTTP, the profile fetched
    into ``output``. The pid is the target's own (its sidecar shares its PID namespace)."""

    url: str
    pid: int
    output: Path
    rate_hz: int
    seconds: float = 0.0
    cpu_seconds: float | None = None
    died: list[int] = field(default_factory=list)

    @classmethod
    def for_target(cls, target: Target, pid: int, output: Path, rate_hz: int) -> AgentRecorder:
        return cls(agent_url(target), pid, output, rate_hz)

    def _post(self, path: str, **params: int) -> tuple[int, dict[str, Any]]:
        resp = httpx.post(self.url + path, params=params, timeout=STOP_TIMEOUT_S + 10)
        return resp.status_code, resp.json()

    def start(self) -> str | None:
        try:
            code, said = self._post("/start", pid=self.pid, rate=self.rate_hz)
        except (httpx.HTTPError, ValueError) as exc:
            return f"not profiled: the profiler sidecar at {self.url} failed: {exc or type(exc).__name__}"
        return None if code == 200 else f"not profiled: {said.get('error', f'sidecar answered {code}')}"

    def stop(self) -> str | None:
        try:
            code, said = self._post("/stop")
            if code != 200:
                return f"the profiler sidecar answered {code}: {said.get('error')}"
            self.seconds, self.cpu_seconds, self.died = said["seconds"], said["cpu_seconds"], said["died"]
            if said["problem"]:
                return str(said["problem"])
            profile = httpx.get(self.url + "/profile", timeout=STOP_TIMEOUT_S)
            profile.raise_for_status()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return f"the profiler sidecar at {self.url} failed: {exc or type(exc).__name__}"
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_bytes(profile.content)
        return None
