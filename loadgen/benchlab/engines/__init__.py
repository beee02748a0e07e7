"""Load engines behind one interface (``base.Engine``): wrk for closed loop, k6 for open loop."""

from __future__ import annotations

from benchlab.engines.base import DEFAULT_TIMEOUT_S, Engine, Load, Request
from benchlab.engines.k6 import K6
from benchlab.engines.wrk import Wrk

ENGINES: dict[str, type[Engine]] = {Wrk.mode: Wrk, K6.mode: K6}


def for_mode(mode: str) -> Engine:
    """The engine that measures a step of this mode."""
    return ENGINES[mode]()


__all__ = ["DEFAULT_TIMEOUT_S", "ENGINES", "K6", "Engine", "Load", "Request", "Wrk", "for_mode"]
