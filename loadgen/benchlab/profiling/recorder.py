"""The one interface the profiled step records through, whichever process runs py-spy: benchlab
itself natively (``SubprocessRecorder``), or a sidecar's agent in compose (``AgentRecorder``),
because there the loadgen shares the host's PID namespace and must never hold ptrace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from benchlab.targets import Target


class Recorder(Protocol):
    """One recording of a target's process tree into ``output`` (speedscope JSON)."""

    output: Path
    seconds: float  # how long it sampled
    cpu_seconds: float | None  # py-spy's own CPU, when known
    died: list[int]  # the target's processes that were gone by the stop

    def start(self) -> str | None:
        """Starts sampling; returns why it cannot, or None."""

    def stop(self) -> str | None:
        """Stops and leaves the profile at ``output``; returns why there is none, or None."""


# target, its master's pid (as the target reports it), the speedscope file, the rate in Hz
RecorderFactory = Callable[[Target, int, Path, int], Recorder]
