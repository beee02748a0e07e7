"""``--profile`` checked before the run starts: the profiler there, allowed to read the targets,
and able to read their interpreters. Each refusal is one line (exit 2) saying what to change."""

from __future__ import annotations

from typing import Any

from benchlab.errors import BenchlabError
from benchlab.model.level import Axes
from benchlab.profiling.pyspy import DEFAULT_RATE_HZ, check_interpreter, check_ptrace, find_py_spy, py_spy_version
from benchlab.profiling.step import Profiler
from benchlab.targets import Target


def prepare_profiler(
    targets: list[Target], native: bool, repeats: int, setup: Axes
) -> tuple[Profiler, dict[str, Any]]:
    """The profiler for the runner (profiling at ``setup``: a sweep's last), and what run.json
    records of it."""
    if not native:
        raise BenchlabError(
            "--profile (PROFILE=1) needs --native: py-spy must read the targets' processes, and neither compose "
            "nor a remote lab grants that; profile with `benchlab run --native --profile`"
        )
    binary = find_py_spy()
    check_ptrace(binary)
    from benchlab.harness import repo_root
    from benchlab.venvs import service_python

    root = repo_root()
    for service in sorted({t.service for t in targets}):
        python = service_python(root / "services" / service)
        check_interpreter(python, ", ".join(t.name for t in targets if t.service == service))
    meta = {
        "profiler": "py-spy",
        "version": py_spy_version(binary),
        "rate_hz": DEFAULT_RATE_HZ,
        "options": "record --subprocesses --nonblocking --format speedscope (no native frames, idle left out)",
    }
    return Profiler(binary=binary, repeats=repeats, setup=setup), meta
