"""The one interface every load engine implements: a request and a load in, a Measurement out.

The runner picks an engine by the step's mode once (``engines.for_mode``) and never branches on
it again: what differs between modes (whether a test is primed, how a step's load is derived,
whether its throughput is the peak that open-loop rates scale from) is the engine's to say. A new
engine is one module here with one class, registered by name in ``engines.ENGINES``. What to send is a ``Request``
(method, URL, headers, body), so a test with a POST body needs no engine-specific code; how
hard to send it is a ``Load``: closed loop (fixed connections, optionally pipelined) or open
loop (a fixed arrival rate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from benchlab.measurement import Measurement
from benchlab.model.modes import LoadMode

if TYPE_CHECKING:
    from benchlab.config.scenario import PlannedStep

DEFAULT_TIMEOUT_S = 8.0  # TechEmpower's wrk --timeout 8
SCRIPTS = Path(__file__).with_name("scripts")


@dataclass(frozen=True)
class Request:
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Load:
    """Closed loop: ``connections`` (and ``pipeline`` depth). Open loop: ``rate`` req/s with
    ``vus`` pre-allocated virtual users, growing to ``max_vus``."""

    duration_s: float
    timeout_s: float = DEFAULT_TIMEOUT_S
    connections: int = 0
    pipeline: int = 1
    rate: float | None = None
    vus: int = 0
    max_vus: int = 0


class Engine(ABC):
    name: ClassVar[str]
    mode: ClassVar[LoadMode]  # the results' ``mode`` column
    primes: ClassVar[bool] = False  # a test's steps follow TFB's primer and warm-up (closed loop)
    sets_peak: ClassVar[bool] = False  # its throughput is the peak open-loop fractions scale from

    @abstractmethod
    def load_for(self, step: PlannedStep, timeout_s: float, peak_rps: float | None) -> Load | str:
        """The load of one planned step (``peak_rps``: this target and test's best so far), or why
        it cannot be run."""

    def connections(self, step: PlannedStep) -> int:
        """Sockets the step holds open at once, checked against the open-file limit before a run."""
        return 0

    @abstractmethod
    def label(self, step: PlannedStep, load: Load) -> str:
        """How the step's load reads in progress lines (``c=64``, ``1200 req/s offered``)."""

    @abstractmethod
    def run(self, request: Request, load: Load, raw_path: Path | None = None) -> Measurement:
        """One engine run; its raw output goes to ``raw_path``. Failures are BenchlabError."""

    @abstractmethod
    def provenance(self) -> Any:
        """What run.json records of the engine (its version, for k6 the binary's hash too)."""
