"""``benchlab run``: verify each target, then measure every step of a scenario into ``results.csv``.

Order follows TechEmpower: per target and test a primer, an optional warm-up at the highest
concurrency, then each level with a pause between. Repeats are the outer loop so that slow
drift on the host spreads over every target instead of favouring one. A step's row is written
the moment it ends; ``--resume`` skips the steps whose ``step_id`` is already in the CSV.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from benchlab.contract import COUNTED_TESTS, TEST_TYPES
from benchlab.engines import Load, Request, for_mode
from benchlab.errors import BenchlabError
from benchlab.lab import Lab
from benchlab.measurement import ERROR_KINDS, Measurement
from benchlab.progress import Progress
from benchlab.results import (
    COLUMNS,
    RAW_DIR,
    ResultsWriter,
    read_rows,
)
from benchlab.sampling import CLIENT_BOUND_SHARE, WAITING_BOUND_SHARE, StepSampler
from benchlab.scenarios import PlannedStep, Scenario
from benchlab.status import Status, StepStatus, judge
from benchlab.targets import Target
from benchlab.verification import NO_DSN, NO_STATS, ContractCheck, format_checks, verify_targets

# How long a target may take to answer again before a test's steps: a server can still be working
# through the last step's queued requests (plaintext queues 16 per connection) after wrk stops.
RECOVERY_S = 30.0


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def step_id(step: PlannedStep) -> str:
    """A stable name for a step: the resume key and the raw file's name."""
    level = f"c{step.concurrency}-p{step.pipeline}-q{step.queries if step.queries is not None else '-'}"
    if step.mode == "open":
        level += f"-rate{step.rate:g}" if step.rate else f"-frac{step.rate_fraction:g}"
    return f"r{step.repeat}/{step.target}/{step.test}/{step.mode}/{level}"


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
        pending_targets = [t for t in self.lab.targets if any(
            s.target == t.name and step_id(s) not in self.done for s in self.steps)]  # fmt: skip
        tests = sorted({s.test for s in self.steps})
        self.progress.message(f"verifying {len(pending_targets)} target(s) x {len(tests)} test(s)")
        verdicts = verify_targets(pending_targets, tests, self.lab.dsn, upstream_url=self.lab.upstream_url)
        checks = {(c.target, c.test): c for c in verdicts}
        counted = [c for c in checks.values() if c.test in COUNTED_TESTS]
        if counted:
            self.query_counts_verified = not any(NO_STATS in r or NO_DSN in r for c in counted for r in c.reasons)
        self.progress.message(format_checks(list(checks.values())))
        with ResultsWriter(self.run_dir) as writer:
            blocks = groupby(self.steps, key=lambda s: (s.repeat, s.target, s.test))
            for (repeat, target_name, test), group in blocks:
                pending = [s for s in group if step_id(s) not in self.done]
                if pending or self.profiler is not None:  # a resumed run may owe only the profiled step
                    check = checks.get((target_name, test))
                    self._run_group(writer, by_name[target_name], test, pending, check, repeat)

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
        closed = [s for s in steps if s.mode == "closed"]
        if closed:
            self._prime(target, closed)
        for s in steps:
            self._measure(writer, target, s, verdict)
        if self.profiler is not None:
            self.profiler.after_test(self, writer, target, test, repeat, verdict)

    def _prime(self, target: Target, closed: list[PlannedStep]) -> None:
        """TFB's primer (few connections) and warm-up (highest level) before measuring: not recorded."""
        first = closed[0]
        engine = for_mode("closed")
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
        time.sleep(self.scenario.pause_s)
        started = now()
        rate = None
        if step.mode == "open":
            peak = self.peaks.get((target.name, step.test))
            rate = step.rate or (step.rate_fraction * peak if peak and step.rate_fraction else None)
            if not rate:
                why = StepStatus(Status.SKIPPED, "no closed-loop peak to scale the rate from")
                self._write(writer, target, step, None, None, why, started)
                return
            label = f"{rate:.0f} req/s offered"
        else:
            label = f"c={step.concurrency}" + (f" pipeline={step.pipeline}" if step.pipeline > 1 else "")
        q = f" q={step.queries}" if step.queries is not None else ""
        self.progress.live(f"{target.name} {step.test}{q} {label} r{step.repeat}", step.duration_s)
        waits = TEST_TYPES[step.test].waits
        sampler = StepSampler(
            target.url, db_processes=self.lab.db_processes, upstream_url=self.lab.upstream_url if waits else None,
            bound_share=WAITING_BOUND_SHARE if waits else CLIENT_BOUND_SHARE,
        )  # fmt: skip
        try:
            load = Load(duration_s=step.duration_s, timeout_s=self.scenario.timeout_s, connections=step.concurrency,
                        pipeline=step.pipeline, rate=rate, vus=step.concurrency, max_vus=step.max_vus or 0)  # fmt: skip
            with sampler:
                m = for_mode(step.mode).run(_request(target, step), load, raw)
        except BenchlabError as exc:
            self._write(writer, target, step, None, sampler.result, StepStatus(Status.ERROR, str(exc)), started)
            return
        status = judge(verdict, m)
        if step.mode == "closed" and status.measured and not _has_errors(m):
            key = (target.name, step.test)
            self.peaks[key] = max(self.peaks.get(key, 0.0), m.rps)
        if self.profiler is not None:
            self.profiler.observe(step, m, status)
        self._write(writer, target, step, m, sampler.result, status, started)
        shown = "" if status.status is Status.PASS else f" [{status}]"
        self.progress.step_done(f"{target.name} {step.test}{q} {label}: {m.rps:,.0f} req/s{shown}")

    def _write(self, writer: ResultsWriter, target: Target, step: PlannedStep, m: Measurement | None,
               samples: Any, status: StepStatus, started: str,
               extra: dict[str, Any] | None = None) -> None:  # fmt: skip
        if samples is not None and samples.lost and status.measured:  # its server cells are empty, not 0
            lost = f"sampler lost the target ({samples.lost})"
            status = StepStatus(Status.WARN, f"{status.reason}; {lost}" if status.reason else lost)
        meta = self.target_meta.get(target.name, {})
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(
            run_id=self.run_id, target=target.name, framework=target.framework, server=target.server,
            workers=meta.get("workers"), test=step.test, mode=step.mode, concurrency=step.concurrency,
            pipeline=step.pipeline, queries=step.queries, repeat=step.repeat,
            verification=str(status), started_at=started, finished_at=now(), step_id=step_id(step),
        )  # fmt: skip
        if m is not None:
            row.update(m.row())
        if samples is not None:
            row.update(
                server_cpu_cores=samples.server_cpu_cores, server_pss_mb=samples.server_pss_mb,
                server_rss_mb=samples.server_rss_mb,
                db_cpu_cores=samples.db_cpu_cores, loadgen_cpu_cores=samples.loadgen_cpu_cores,
                client_bound=samples.client_bound, upstream_cpu_cores=samples.upstream_cpu_cores,
                upstream_bound=samples.upstream_bound if samples.upstream_cpu_cores is not None else None,
            )  # fmt: skip
        row.update(extra or {})
        writer.write(row)
        self.done.add(step_id(step))
        if m is None:
            self.progress.step_done(f"{target.name} {step.test} {step_id(step)}: {status}")


def _request(target: Target, step: PlannedStep) -> Request:
    """What the engine sends for this step: the test's request against this target."""
    spec = TEST_TYPES[step.test]
    return Request(url=target.url + step.url_path(), method=spec.method, headers=step.headers(), body=spec.body)


def _has_errors(m: Measurement) -> bool:
    return m.socket_errors + m.errors_status > 0


def _verdict(check: ContractCheck | None) -> StepStatus:
    if check is None or check.status == "pass":
        return StepStatus(Status.PASS)
    return StepStatus(Status(check.status), "; ".join(check.reasons))


def _raw_name(sid: str, kind: str) -> str:
    return f"{sid.replace('/', '__')}.{kind}.txt"


def peaks_from(run_dir: Path) -> dict[tuple[str, str], float]:
    """Closed-loop peaks already measured (a resumed run scales open-loop rates from them)."""
    peaks: dict[tuple[str, str], float] = {}
    if not (run_dir / "results.csv").exists():
        return peaks
    for row in read_rows(run_dir):
        ok = row["mode"] == "closed" and row["rps"] and StepStatus.parse(row["verification"]).measured
        errors = sum(int(row[f"errors_{k}"] or 0) for k in ERROR_KINDS)
        if ok and not errors:
            key = (row["target"], row["test"])
            peaks[key] = max(peaks.get(key, 0.0), float(row["rps"]))
    return peaks
