"""How load is offered: the one definition of the results' ``mode`` column."""

from __future__ import annotations

from enum import StrEnum


class LoadMode(StrEnum):
    """``closed``: a fixed number of connections, each sending when answered (wrk).
    ``open``: a fixed arrival rate, whatever the server's pace (k6).
    ``profiled``: closed loop with py-spy attached (``--profile``): its figures describe the
    profile and never count as a measurement (peaks, charts, claims)."""

    CLOSED = "closed"
    OPEN = "open"
    PROFILED = "profiled"

    @property
    def counted(self) -> bool:
        """Whether a step of this mode is a measurement (a profiled step is not)."""
        return self in COUNTED_MODES

    @classmethod
    def parse(cls, text: str | None) -> LoadMode | str:
        """A recorded mode; an empty cell is closed loop (runs before open loop existed), and a
        mode this version does not know is kept as text rather than dropped."""
        try:
            return cls((text or cls.CLOSED).strip())
        except ValueError:
            return str(text)


COUNTED_MODES: frozenset[LoadMode] = frozenset({LoadMode.CLOSED, LoadMode.OPEN})
MODE_ORDER: tuple[LoadMode, ...] = (LoadMode.CLOSED, LoadMode.OPEN)  # how reports list modes
