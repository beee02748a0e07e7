"""``--profile`` checked before the run starts: the profiler there, allowed to read the targets,
and able to read their interpreters. Each refusal is one line (exit 2) saying what to change.

Natively benchlab runs py-spy itself. In compose the loadgen shares the host's PID namespace and
holds no ptrace, so py-spy runs in one sidecar per target (compose.profile.yaml), checked once
the lab is up (``Profiler.lab_check``). Anywhere else (a lab on other hosts) is refused."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.model.level import Axes
from benchlab.profiling import pyspy
from benchlab.profiling.sidecar import OVERLAY_COMMAND, AgentRecorder, check_sidecars
from benchlab.profiling.step import Profiler
from benchlab.targets import Target

OPTIONS = "record --subprocesses --nonblocking --format speedscope (no native frames, idle left out)"


def prepare_profiler(
    targets: list[Target], native: bool, repeats: int, setups: Mapping[str, Axes]
) -> tuple[Profiler, dict[str, Any]]:
    """The profiler for the runner (profiling each test at its ``setups`` entry: its sweep's last),
    and what run.json records of it."""
    meta: dict[str, Any] = {"profiler": "py-spy", "rate_hz": pyspy.DEFAULT_RATE_HZ, "options": OPTIONS}
    if not native:
        if settings().profiler_sidecars:
            return Profiler(recorder=AgentRecorder.for_target, repeats=repeats, setups=setups,
                            lab_check=check_sidecars), meta  # fmt: skip
        if settings().mode == "compose":
            raise BenchlabError(f"PROFILE=1 needs the profiling overlay, which gives each target a py-spy sidecar "
                                f"(the loadgen never gets ptrace): `{OVERLAY_COMMAND}`")  # fmt: skip
        raise BenchlabError("--profile (PROFILE=1) needs --native, or compose with compose.profile.yaml: py-spy "
                            "must read the targets' processes, which a lab on other hosts does not allow")  # fmt: skip
    binary = pyspy.find_py_spy()
    pyspy.check_ptrace(binary)
    from benchlab.harness import repo_root
    from benchlab.venvs import service_python

    root = repo_root()
    for service in sorted({t.service for t in targets}):
        python = service_python(root / "services" / service)
        pyspy.check_interpreter(python, ", ".join(t.name for t in targets if t.service == service))

    def native_recorder(target: Target, pid: int, output: Path, rate_hz: int) -> pyspy.SubprocessRecorder:
        return pyspy.SubprocessRecorder(binary, pid, output, rate_hz)

    meta["version"] = pyspy.py_spy_version(binary)
    return Profiler(recorder=native_recorder, repeats=repeats, setups=setups), meta
