"""``benchlab run``: verify each target, then measure every step of a scenario into ``results.csv``.

Order follows TechEmpower: per target and test a primer, an optional warm-up at the highest
concurrency, then each level with a pause between. Repeats are the outer loop so that slow
drift on the host spreads over every target instead of favouring one. A step's row is written
the moment it ends; ``--resume`` skips the steps whose ``step_id`` is already in the CSV.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from benchlab.config.scenario import PlannedStep, Scenario
from benchlab.contract import COUNTED_TESTS, TEST_TYPES
from benchlab.engines import Engine, Load, Request, for_mode
from benchlab.errors import BenchlabError
from benchlab.lab import Lab
from benchlab.measurement import Measurement
from benchlab.metadata import target_info
from benchlab.model.codec import RAW_DIR, ResultsWriter, read_steps
from benchlab.model.level import AXIS_FIELDS, AXIS_NAMES, AXIS_SHORT, Axes, Level
from benchlab.model.status import Status, StepStatus, judge
from benchlab.model.step import Step
from benchlab.progress import Progress
from benchlab.sampling import CLIENT_BOUND_SHARE, WAITING_BOUND_SHARE, StepSampler, server_busy
from benchlab.targets import Target
from benchlab.verification import NO_DSN, NO_STATS, ContractCheck, format_checks, verify_targets

# How long a target may take to answer again before a test's steps: a server can still be working
# through the last step's queued requests (plaintext queues 16 per connection) after wrk stops.
RECOVERY_S = 30.0


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def step_id(step: PlannedStep) -> str:
    """A stable name for a step: the resume key and the raw file's name."""
    where = "/".join([step.target, *(f"{AXIS_SHORT[a]}{v}" for a, v in step.setup.swept.items())])
    level = f"c{step.concurrency}-p{step.pipeline}-q{step.queries if step.queries is not None else '-'}"
    if step.rate:
        level += f"-rate{step.rate:g}"
    elif step.rate_fraction:
        level += f"-frac{step.rate_fraction:g}"
    return f"r{step.repeat}/{where}/{step.test}/{step.mode}/{level}"


@dataclass
class Runner:
    """Runs the planned steps of one run directory."""

    run_dir: Path
    run_id: str
    scenario: Scenario
    lab: Lab
    steps: list[PlannedStep]
    progress: Progress
    done: set[str] = field(default_factory=set)
    peaks: dict[tuple[str, str], float] = field(default_factory=dict)
    target_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_counts_verified: bool | None = None  # None: no test that counts queries was verified
    profiler: Any = None  # a profiling.step.Profiler when --profile: one more step per test, py-spy attached

    def execute(self) -> None:
        by_name = {t.name: t for t in self.lab.targets}
        checks = self._verify()
        with ResultsWriter(self.run_dir) as writer:
            blocks = groupby(self.steps, key=lambda s: (s.repeat, s.setup, s.target, s.test))
            for (repeat, setup, target_name, test), group in blocks:
                pending = [s for s in group if step_id(s) not in self.done]
                owed = self.profiler is not None and self.profiler.wants(repeat, setup, test)
                if pending or owed:  # a resumed run may owe only the profiled step
                    if self._apply(setup):
                        checks = self._verify()
                    check = checks.get((target_name, test))
                    why = self.lab.refused.get(target_name)
                    if why is not None:
                        refused = StepStatus(Status.SKIPPED, f"refused with {setup.label(AXIS_NAMES)}: {why}")
                        for s in pending:
                            self._write(writer, by_name[target_name], s, None, None, refused, now())
                        continue
                    self._run_group(writer, by_name[target_name], test, pending, check, repeat)

    def _verify(self) -> dict[tuple[str, str], ContractCheck]:
        """The contract checked for every target still to measure (again after each restart: a
        target on another Python is another build of it)."""
        pending_targets = [t for t in self.lab.targets if t.name not in self.lab.refused and any(
            s.target == t.name and step_id(s) not in self.done for s in self.steps)]  # fmt: skip
        tests = sorted({s.test for s in self.steps})
        self.progress.message(f"verifying {len(pending_targets)} target(s) x {len(tests)} test(s)")
        verdicts = verify_targets(pending_targets, tests, self.lab.dsn, upstream_url=self.lab.upstream_url)
        checks = {(c.target, c.test): c for c in verdicts}
        counted = [c for c in checks.values() if c.test in COUNTED_TESTS]
        if counted:
            self.query_counts_verified = not any(NO_STATS in r or NO_DSN in r for c in counted for r in c.reasons)
        self.progress.message(format_checks(list(checks.values())))
        return checks

    def _apply(self, setup: Axes) -> bool:
        """One combination of the swept axes: the targets restarted with it, and what they now
        report (workers, CPUs, Python) is what the next rows record. True when they restarted."""
        if setup == self.lab.setup:
            return False
        self.progress.message(f"restarting the targets with {setup.label(AXIS_NAMES) or 'their defaults'}")
        self.lab.apply(setup)
        self.target_meta.update({t.name: target_info(t) for t in self.lab.targets if t.name not in self.lab.refused})
        return True

    def _run_group(
        self, writer: ResultsWriter, target: Target, test: str, steps: list[PlannedStep], check: ContractCheck | None,
        repeat: int,
    ) -> None:  # fmt: skip
        verdict = _verdict(check)
        if not verdict.measured:
            for s in steps:
                self._write(writer, target, s, None, None, verdict, now())
            return
        took = target.answers_within(RECOVERY_S)
        if took is None:
            why = StepStatus(Status.ERROR, f"target not responding (waited up to {RECOVERY_S:g} s)")
            for s in steps:
                self._write(writer, target, s, None, None, why, now())
            return
        if took > 1:
            self.progress.message(f"{target.name} {test}: answered only after {took:.1f} s (busy after the last step)")
        primed = [s for s in steps if for_mode(s.mode).primes]
        if primed:
            self._prime(target, primed)
        for s in steps:
            self._measure(writer, target, s, verdict)
        if self.profiler is not None:
            self.profiler.after_test(self, writer, target, test, repeat, verdict)

    def _prime(self, target: Target, closed: list[PlannedStep]) -> None:
        """TFB's primer (few connections) and warm-up (highest level) before measuring: not recorded."""
        first = closed[0]
        engine = for_mode(first.mode)
        raw = self.run_dir / RAW_DIR / _raw_name(step_id(first), "primer")
        p = self.scenario.primer
        self.progress.live(f"{target.name} {first.test}: primer {p.duration_s:g} s")
        try:
            engine.run(_request(target, first), Load(duration_s=p.duration_s, connections=p.connections), raw)
            warmup = self.scenario.warmup_duration_s
            if warmup:
                top = max(closed, key=lambda s: s.concurrency)
                self.progress.live(f"{target.name} {first.test}: warm-up {warmup:g} s at {top.concurrency}")
                load = Load(duration_s=warmup, connections=top.concurrency, pipeline=top.pipeline)
                engine.run(_request(target, top), load, self.run_dir / RAW_DIR / _raw_name(step_id(top), "warmup"))
        except BenchlabError as exc:
            self.progress.message(f"{target.name} {first.test}: primer failed: {exc}")

    def _measure(self, writer: ResultsWriter, target: Target, step: PlannedStep, verdict: StepStatus) -> None:
        sid = step_id(step)
        raw = self.run_dir / RAW_DIR / _raw_name(sid, "step")
        waited = time.monotonic()
        busy = server_busy(target.url, self.scenario.pause_s, self.scenario.settle_s)
        waited = time.monotonic() - waited - self.scenario.pause_s
        if waited > 2:
            self.progress.message(f"{target.name} {step.test}: waited {waited:.1f} s for the last step's work to end")
        started = now()
        engine = for_mode(step.mode)
        load = engine.load_for(step, self.scenario.timeout_s, self.peaks.get((target.name, step.test)))
        if isinstance(load, str):
            self._write(writer, target, step, None, None, StepStatus(Status.SKIPPED, load), started)
            return
        label = engine.label(step, load)
        q = f" q={step.queries}" if step.queries is not None else ""
        self.progress.live(f"{target.name} {step.test}{q} {label} r{step.repeat}", step.duration_s)
        sampler = self.sampler(target, step.test)
        try:
            with sampler:
                m = engine.run(_request(target, step), load, raw)
        except BenchlabError as exc:
            self._write(writer, target, step, None, sampler.result, StepStatus(Status.ERROR, str(exc)), started)
            return
        status = judge(verdict, m)
        if busy is not None and status.measured:
            status = _warned(status, busy)
        if engine.sets_peak and status.measured and not _has_errors(m):
            key = (target.name, step.test)
            self.peaks[key] = max(self.peaks.get(key, 0.0), m.rps)
        if self.profiler is not None:
            self.profiler.observe(step, m, status)
        self._write(writer, target, step, m, sampler.result, status, started)
        shown = "" if status.status is Status.PASS else f" [{status}]"
        self.progress.step_done(f"{target.name} {step.test}{q} {label}: {m.rps:,.0f} req/s{shown}")

    def sampler(self, target: Target, test: str) -> StepSampler:
        """The step's sampler; a test that waits on the upstream samples it too, and flags the
        step at half the load generator's CPUs (issue 24's rule)."""
        waits = TEST_TYPES[test].waits
        return StepSampler(
            target.url, db_processes=self.lab.db_processes, upstream_url=self.lab.upstream_url if waits else None,
            bound_share=WAITING_BOUND_SHARE if waits else CLIENT_BOUND_SHARE,
        )  # fmt: skip

    def _write(self, writer: ResultsWriter, target: Target, step: PlannedStep, m: Measurement | None,
               samples: Any, status: StepStatus, started: str,
               profiler_overhead: float | None = None) -> None:  # fmt: skip
        if samples is not None and samples.lost and status.measured:  # its server cells are empty, not 0
            lost = f"sampler lost the target ({samples.lost})"
            status = _warned(status, lost)
        meta = self.target_meta.get(target.name, {})
        record = Step(
            run_id=self.run_id, target=target.name, framework=target.framework, server=target.server,
            test=step.test, mode=step.mode, level=Level(step.concurrency, step.pipeline, step.queries),
            axes=Axes(**{a: meta.get(a) for a in AXIS_FIELDS}),
            repeat=step.repeat, status=status, started_at=started, finished_at=now(), step_id=step_id(step),
        )  # fmt: skip
        if m is not None:
            record = record.measured(m)
        if samples is not None:
            upstream_bound = samples.upstream_bound if samples.upstream_cpu_cores is not None else None
            record = record.sampled(vars(samples), samples.client_bound, upstream_bound)
        if profiler_overhead is not None:
            record = replace(record, profiler_overhead=profiler_overhead)
        writer.write(record)
        self.done.add(step_id(step))
        if m is None:
            self.progress.step_done(f"{target.name} {step.test} {step_id(step)}: {status}")


def _request(target: Target, step: PlannedStep) -> Request:
    """What the engine sends for this step: the test's request against this target."""
    spec = TEST_TYPES[step.test]
    return Request(url=target.url + step.url_path(), method=spec.method, headers=step.headers(), body=spec.body)


def _warned(status: StepStatus, why: str) -> StepStatus:
    """A measured step's status with one more reason not to quote it."""
    return StepStatus(Status.WARN, f"{status.reason}; {why}" if status.reason else why)


def _has_errors(m: Measurement) -> bool:
    return m.socket_errors + m.errors_status > 0


def _verdict(check: ContractCheck | None) -> StepStatus:
    if check is None or check.status is Status.PASS:
        return StepStatus(Status.PASS)
    return StepStatus(check.status, "; ".join(check.reasons))


def _raw_name(sid: str, kind: str) -> str:
    return f"{sid.replace('/', '__')}.{kind}.txt"


def peaks_from(run_dir: Path) -> dict[tuple[str, str], float]:
    """Peaks already measured (a resumed run scales open-loop rates from them)."""
    peaks: dict[tuple[str, str], float] = {}
    if not (run_dir / "results.csv").exists():
        return peaks
    for step in read_steps(run_dir):
        if step.ok and not step.errors and _sets_peak(step.mode):
            key = (step.target, step.test)
            peaks[key] = max(peaks.get(key, 0.0), step.rps or 0.0)
    return peaks


def _sets_peak(mode: str) -> bool:
    try:
        engine: Engine = for_mode(mode)
    except (KeyError, ValueError):
        return False
    return engine.sets_peak
