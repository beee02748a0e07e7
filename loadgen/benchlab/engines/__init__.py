"""Load engines behind one interface (``base.Engine``), registered by name: wrk for closed loop,
k6 for open loop, wrk again for the profiled step (py-spy attached)."""

from __future__ import annotations

from benchlab.engines.base import DEFAULT_TIMEOUT_S, Engine, Load, Request
from benchlab.engines.k6 import K6
from benchlab.engines.wrk import ProfiledWrk, Wrk
from benchlab.model.modes import LoadMode

ENGINES: dict[str, type[Engine]] = {cls.name: cls for cls in (Wrk, K6, ProfiledWrk)}
BY_MODE: dict[LoadMode, type[Engine]] = {cls.mode: cls for cls in ENGINES.values()}


def for_mode(mode: LoadMode | str) -> Engine:
    """The engine that measures a step of this mode."""
    return BY_MODE[LoadMode(mode)]()


__all__ = [
    "BY_MODE", "DEFAULT_TIMEOUT_S", "ENGINES", "K6", "Engine", "Load", "ProfiledWrk", "Request", "Wrk", "for_mode",
]  # fmt: skip
