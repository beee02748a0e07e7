"""The one record of a step: what the runner writes as a ``results.csv`` row and what every
reader (report, compare, claims, --resume) gets back from it (``model.codec`` is the mapping).

An engine's ``Measurement`` is folded in with ``Step.measured``; a step that was not load-tested
(failed verification, an engine error, skipped) keeps its figures empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from benchlab.measurement import ERROR_COLUMNS, LATENCY_COLUMNS, LATENCY_KEYS, Measurement
from benchlab.model.level import Axes, Level
from benchlab.model.modes import LoadMode
from benchlab.model.status import Status, StepStatus

RESOURCE_COLUMNS: tuple[str, ...] = (
    "server_cpu_cores", "server_pss_mb", "server_rss_mb", "db_cpu_cores", "loadgen_cpu_cores", "upstream_cpu_cores",
)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One step of one repeat: where it ran, at what load, what came of it."""

    target: str
    test: str
    mode: LoadMode | str
    level: Level
    repeat: int
    status: StepStatus
    axes: Axes = field(default_factory=Axes)
    run_id: str = ""
    framework: str = ""
    server: str = ""
    step_id: str = ""
    started_at: str = ""
    finished_at: str = ""
    requests: int | None = None
    duration_s: float | None = None
    rps: float | None = None
    latency: Mapping[str, float | None] = field(default_factory=lambda: dict.fromkeys(LATENCY_COLUMNS))
    errors_by_kind: Mapping[str, int | None] = field(default_factory=lambda: dict.fromkeys(ERROR_COLUMNS))
    dropped: int | None = None
    overloaded: bool | None = None
    resources: Mapping[str, float | None] = field(default_factory=lambda: dict.fromkeys(RESOURCE_COLUMNS))
    client_bound: bool | None = None
    upstream_bound: bool | None = None  # the upstream service, not the server, may have been the limit
    profiler_overhead: float | None = None  # a profiled step's throughput lost to py-spy (a fraction)

    def measured(self, m: Measurement) -> Step:
        """This step with an engine's figures (and the rate it offered) filled in."""
        return replace(
            self,
            level=self.level.with_rate(m.offered_rps),
            requests=m.requests,
            duration_s=m.duration_s,
            rps=m.rps,
            latency={c: m.latency_ms.get(k) for k, c in zip(LATENCY_KEYS, LATENCY_COLUMNS, strict=True)},
            errors_by_kind={c: getattr(m, c) for c in ERROR_COLUMNS},
            dropped=m.dropped,
            overloaded=m.overloaded,
        )

    def sampled(self, resources: Mapping[str, float | None], client_bound: bool | None,
                upstream_bound: bool | None = None) -> Step:  # fmt: skip
        return replace(self, resources={c: resources.get(c) for c in RESOURCE_COLUMNS}, client_bound=client_bound,
                       upstream_bound=upstream_bound)  # fmt: skip

    @property
    def counted(self) -> bool:
        """Whether this step is a measurement at all (a profiled step, py-spy attached, is not)."""
        return isinstance(self.mode, LoadMode) and self.mode.counted

    @property
    def ok(self) -> bool:
        """A measurement: passed or warned verification, and served the test (``status.judge``)."""
        return self.status.measured and self.rps is not None

    @property
    def errors(self) -> int:
        return sum(v or 0 for v in self.errors_by_kind.values())

    @property
    def verification(self) -> str:
        return str(self.status)

    def value(self, metric: str) -> float | None:
        """``rps`` or one latency column."""
        return self.rps if metric == "rps" else self.latency.get(metric)

    @property
    def flags(self) -> tuple[str, ...]:
        """Why a figure from this step must not be quoted unmarked."""
        out = []
        if self.status.status is Status.WARN:
            out.append(str(self.status))
        if self.client_bound:
            out.append("client-bound")
        if self.upstream_bound:
            out.append("upstream-bound")
        if self.overloaded:
            out.append("overloaded: offered rate not delivered")
        if self.errors:
            out.append(f"{self.errors} errors")
        if self.dropped:
            out.append(f"{self.dropped} dropped")
        return tuple(out)
