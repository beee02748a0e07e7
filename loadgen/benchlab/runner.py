"""``benchlab run``: verify each target, then measure every step of a scenario into ``results.csv``.

Order follows TechEmpower: per target and test a primer, an optional warm-up at the highest
concurrency, then each level with a pause between. Repeats are the outer loop so that slow
drift on the host spreads over every target instead of favouring one. A step's row is written
the moment it ends; ``--resume`` skips the steps whose ``step_id`` is already in the CSV.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any

import psutil
from psycopg.conninfo import conninfo_to_dict

from benchlab.contract import COUNTED_TESTS, TEST_TYPES, TESTS
from benchlab.cpus import RoleCpus
from benchlab.engines import ENGINES, Load, Request, for_mode
from benchlab.errors import BenchlabError
from benchlab.measurement import Measurement, ensure_open_files
from benchlab.metadata import database_info, run_metadata, target_info
from benchlab.progress import Progress
from benchlab.results import (
    COLUMNS,
    RAW_DIR,
    ResultsWriter,
    iter_done_steps,
    read_rows,
    read_run_json,
    write_run_json,
)
from benchlab.sampling import StepSampler, owner_alive, process_identity, process_tree
from benchlab.scenarios import Scenario, Step, load_scenario
from benchlab.status import MEASURED, Status, StepStatus, judge
from benchlab.targets import Target, load_targets, parse_overrides, split_names
from benchlab.verification import NO_DSN, NO_STATS, ContractCheck, format_checks, verify_targets

SCENARIO_COPY = "scenario.yaml"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def step_id(step: Step) -> str:
    """A stable name for a step: the resume key and the raw file's name."""
    level = f"c{step.concurrency}-p{step.pipeline}-q{step.queries if step.queries is not None else '-'}"
    if step.mode == "open":
        level += f"-rate{step.rate:g}" if step.rate else f"-frac{step.rate_fraction:g}"
    return f"r{step.repeat}/{step.target}/{step.test}/{step.mode}/{level}"


@dataclass
class Lab:
    """Where the targets are and what can be sampled: native (started here) or external."""

    targets: list[Target]
    dsn: str | None
    db_processes: Callable[[], list[psutil.Process]] | None
    mode: str
    database: dict[str, Any]  # what run.json records of the database (metadata.database_info)


@contextmanager
def open_lab(
    args: argparse.Namespace, targets: list[Target], cpus: RoleCpus, ready_timeout_s: str = "120"
) -> Iterator[Lab]:
    """Starts the lab (``--native``) or waits, bounded, for targets running elsewhere."""
    if args.native:
        from benchlab.harness import NativeLab

        with NativeLab(targets, cpus=cpus, workers=args.workers) as native:
            assert native.postgres is not None
            yield Lab(targets, native.dsn, native.postgres.processes, "native", dict(native.database_info or {}))
        return
    wait_ready(targets, float(os.environ.get("BENCHLAB_READY_TIMEOUT", ready_timeout_s)))
    db_processes = None
    if os.environ.get("BENCHLAB_SAMPLE_DB") == "host" and args.dsn:
        db_processes = partial(host_postgres, str(conninfo_to_dict(args.dsn).get("port") or "5432"))
    mode = os.environ.get("BENCHLAB_MODE", "external")
    yield Lab(targets, args.dsn, db_processes, mode, database_info(args.dsn))


def host_postgres(port: str) -> list[psutil.Process]:
    """The Postgres serving ``port`` and its backends, among the processes we can see (compose
    gives the loadgen the host's PID namespace; other Postgres servers there are not ours)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] in ("postgres", "postmaster") and _serves_port(cmd, port):
            return process_tree(proc.pid)
    return []


def _serves_port(cmdline: list[str], port: str) -> bool:
    return f"port={port}" in cmdline or any(a == "-p" and b == port for a, b in pairwise(cmdline))


def wait_ready(targets: list[Target], timeout_s: float) -> None:
    """Bounded wait until each target answers ``/json``; a dead one is a clear error."""
    deadline = time.monotonic() + timeout_s
    for t in targets:
        while not t.answers():
            if time.monotonic() > deadline:
                raise BenchlabError(
                    f"target {t.name} at {t.url} did not become ready within {timeout_s:.0f} s"
                )
            time.sleep(0.5)


@dataclass
class Runner:
    """Runs the planned steps of one run directory."""

    run_dir: Path
    run_id: str
    scenario: Scenario
    lab: Lab
    steps: list[Step]
    progress: Progress
    done: set[str] = field(default_factory=set)
    peaks: dict[tuple[str, str], float] = field(default_factory=dict)
    target_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_counts_verified: bool | None = None  # None: no test that counts queries was verified

    def execute(self) -> None:
        by_name = {t.name: t for t in self.lab.targets}
        pending_targets = [t for t in self.lab.targets if any(
            s.target == t.name and step_id(s) not in self.done for s in self.steps)]  # fmt: skip
        tests = sorted({s.test for s in self.steps})
        self.progress.message(f"verifying {len(pending_targets)} target(s) x {len(tests)} test(s)")
        checks = {(c.target, c.test): c for c in verify_targets(pending_targets, tests, self.lab.dsn)}
        counted = [c for c in checks.values() if c.test in COUNTED_TESTS]
        if counted:
            self.query_counts_verified = not any(NO_STATS in r or NO_DSN in r for c in counted for r in c.reasons)
        self.progress.message(format_checks(list(checks.values())))
        with ResultsWriter(self.run_dir) as writer:
            blocks = groupby(self.steps, key=lambda s: (s.repeat, s.target, s.test))
            for (_, target_name, test), group in blocks:
                pending = [s for s in group if step_id(s) not in self.done]
                if pending:
                    check = checks.get((target_name, test))
                    self._run_group(writer, by_name[target_name], test, pending, check)

    def _run_group(
        self, writer: ResultsWriter, target: Target, test: str, steps: list[Step], check: ContractCheck | None
    ) -> None:
        verdict = _verdict(check)
        if not verdict.measured:
            for s in steps:
                self._write(writer, target, s, None, None, verdict, now())
            return
        if not target.answers(timeout_s=3):
            for s in steps:
                self._write(writer, target, s, None, None, StepStatus(Status.ERROR, "target not responding"), now())
            return
        closed = [s for s in steps if s.mode == "closed"]
        if closed:
            self._prime(target, closed)
        for s in steps:
            self._measure(writer, target, s, verdict)

    def _prime(self, target: Target, closed: list[Step]) -> None:
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

    def _measure(self, writer: ResultsWriter, target: Target, step: Step, verdict: StepStatus) -> None:
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
        sampler = StepSampler(target.url, db_processes=self.lab.db_processes)
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
        self._write(writer, target, step, m, sampler.result, status, started)
        shown = "" if status.status is Status.PASS else f" [{status}]"
        self.progress.step_done(f"{target.name} {step.test}{q} {label}: {m.rps:,.0f} req/s{shown}")

    def _write(self, writer: ResultsWriter, target: Target, step: Step, m: Measurement | None,
               samples: Any, status: StepStatus, started: str) -> None:  # fmt: skip
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
                client_bound=samples.client_bound,
            )  # fmt: skip
        writer.write(row)
        self.done.add(step_id(step))
        if m is None:
            self.progress.step_done(f"{target.name} {step.test} {step_id(step)}: {status}")


def _request(target: Target, step: Step) -> Request:
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


def _peaks_from(run_dir: Path) -> dict[tuple[str, str], float]:
    """Closed-loop peaks already measured (a resumed run scales open-loop rates from them)."""
    peaks: dict[tuple[str, str], float] = {}
    if not (run_dir / "results.csv").exists():
        return peaks
    for row in read_rows(run_dir):
        ok = row["mode"] == "closed" and row["rps"] and StepStatus.parse(row["verification"]).measured
        errors = sum(int(row[f"errors_{k}"] or 0) for k in ("connect", "read", "write", "timeout", "status"))
        if ok and not errors:
            key = (row["target"], row["test"])
            peaks[key] = max(peaks.get(key, 0.0), float(row["rps"]))
    return peaks


def check_limits(steps: list[Step], needs_k6: bool) -> dict[str, Any]:
    """Tools present (k6 the pinned binary) and the open-file limit high enough, before anything starts."""
    engines = {cls.name: cls().provenance() for cls in ENGINES.values() if cls.mode == "closed" or needs_k6}
    ensure_open_files(max((s.concurrency for s in steps if s.mode == "closed"), default=0))
    return engines


def _check_out_dir(out: Path) -> None:
    """Fail before anything starts when results could not be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchlabError(f"cannot create the results directory {out}: {exc.strerror}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise BenchlabError(f"cannot write to the results directory {out}")


def _new_run_dir(out: Path, scenario: Scenario) -> tuple[Path, str]:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{scenario.name}"
    run_dir = out / run_id
    if run_dir.exists():
        run_id += f"-{os.getpid()}"
        run_dir = out / run_id
    run_dir.mkdir(parents=True)
    (run_dir / SCENARIO_COPY).write_text(scenario.to_yaml())
    return run_dir, run_id


def _select_tests(steps: list[Step], wanted: list[str]) -> list[Step]:
    unknown = [t for t in wanted if t not in TESTS]
    if unknown:
        raise BenchlabError(f"unknown test {unknown[0]!r}; known tests: {', '.join(TESTS)}")
    kept = [s for s in steps if s.test in wanted] if wanted else steps
    if not kept:
        raise BenchlabError(f"the scenario has no steps for {', '.join(wanted)}")
    return kept


def run_command(args: argparse.Namespace) -> int:
    """The ``benchlab run`` command; returns the exit code (0: every step measured)."""
    cpus = RoleCpus.from_env()
    if args.resume:
        run_dir = Path(args.resume)
        meta = read_run_json(run_dir)
        run_id = meta["run_id"]
        mode = "native" if args.native else os.environ.get("BENCHLAB_MODE", "external")
        if meta.get("mode", mode) != mode:  # its figures would mix two labs
            hint = ": add --native" if meta["mode"] == "native" else ""
            raise BenchlabError(f"{run_dir} is a {meta['mode']} run; it cannot be resumed in {mode} mode{hint}")
        scenario = load_scenario(str(run_dir / SCENARIO_COPY))
        names = list(meta["targets"])
        tests = meta.get("tests_selected") or []
    else:
        scenario = load_scenario(args.scenario)
        names = split_names(args.targets) or scenario.target_names()
        tests = split_names(args.tests, "--tests")
        meta = {}
    targets = load_targets(names, parse_overrides(args.target))
    steps = _select_tests(scenario.plan(targets), tests)
    engines = check_limits(steps, any(s.mode == "open" for s in steps))
    _check_out_dir(run_dir if args.resume else Path(args.out))
    progress = Progress(total=len(steps))
    progress.message(f"scenario {scenario.name}: {len(steps)} steps over {len(targets)} target(s)")
    progress.message("CPUs: " + ", ".join(f"{r} {c}" for r, c in cpus.describe().items()))
    if meta.get("status") == "running":  # or its process was killed (-9, a crash, a full disk)
        if owner_alive(meta.get("process")):
            raise BenchlabError(f"{run_dir} is still being run by process {meta['process']['pid']}")
        progress.message(f"run {run_id} was interrupted: its process is gone")
        meta["status"] = "interrupted"
        write_run_json(run_dir, meta)
    status, finished = "interrupted", False
    try:
        with open_lab(args, targets, cpus) as lab:
            if cpus.loadgen:
                os.sched_setaffinity(0, cpus.loadgen)
            target_meta = {t.name: target_info(t) for t in targets}
            if args.resume:
                meta.setdefault("resumed_at", []).append(now())
                meta.update(status="running", finished_at=None)
                meta.pop("error", None)
            else:
                run_dir, run_id = _new_run_dir(Path(args.out), scenario)
                meta = run_metadata(
                    run_id=run_id, scenario=scenario.to_dict(), scenario_name=scenario.name,
                    mode=lab.mode, cpus=cpus, targets=target_meta, engines=engines, database=lab.database,
                    started_at=now(),
                )  # fmt: skip
                meta["tests_selected"] = tests  # --resume finishes the same selection
            meta["process"] = process_identity()  # a resume tells a dead run from a running one by it
            progress.message(f"run {run_id} -> {run_dir}")
            write_run_json(run_dir, meta)
            runner = Runner(
                run_dir=run_dir, run_id=run_id, scenario=scenario, lab=lab, steps=steps, progress=progress,
                done=set(iter_done_steps(run_dir)), peaks=_peaks_from(run_dir), target_meta=target_meta,
            )  # fmt: skip
            progress.advance(len(runner.done & {step_id(s) for s in steps}))
            with progress:
                runner.execute()
            if runner.query_counts_verified is not None:
                meta.setdefault("database", {})["query_counts_verified"] = runner.query_counts_verified
            counts = Counter(StepStatus.parse(r["verification"]).status for r in read_rows(run_dir))
            meta["steps"] = {str(k): counts[k] for k in Status if counts[k]}
            status = "complete" if all(k in MEASURED for k in counts) else "partial"
        finished = True
    except (BenchlabError, OSError) as exc:
        status = "failed"
        if meta:
            meta["error"] = str(exc)
        raise
    finally:
        if meta:
            meta.update(status=status, finished_at=now())
            try:
                write_run_json(run_dir, meta)
            except BenchlabError:
                if finished:
                    raise
                # else the run's own failure is the line to show; the previous run.json stays valid
    progress.message(f"results: {run_dir / 'results.csv'}")
    if not args.no_report:
        _report(run_dir, progress, args.claims)
    rows = read_rows(run_dir)
    failed = [r for r in rows if not StepStatus.parse(r["verification"]).measured]
    if failed:
        progress.message(f"{len(failed)} of {len(rows)} steps not measured: see the verification column")
    return 1 if failed else 0


def _report(run_dir: Path, progress: Progress, claims: Path | None) -> None:
    """The run ends with its report; a report that cannot be made does not fail the run."""
    from benchlab.report import build_report

    try:
        progress.message(f"report: {build_report(run_dir, claims_path=claims)}")
    except BenchlabError as exc:
        progress.message(f"no report: {exc}")


def verify_command(args: argparse.Namespace) -> int:
    targets = load_targets(split_names(args.targets), parse_overrides(args.target))
    tests = split_names(args.tests, "--tests") or None
    unknown = [t for t in tests or [] if t not in TESTS]
    if unknown:  # before any wait for the targets or start of the lab
        raise BenchlabError(f"unknown test {unknown[0]!r}; known tests: {', '.join(TESTS)}")
    with open_lab(args, targets, RoleCpus.from_env(), ready_timeout_s="30") as lab:
        checks = verify_targets(targets, tests, lab.dsn)
    print(format_checks(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def calibrate_command(args: argparse.Namespace) -> int:
    from benchlab.calibrate import LOADS, format_calibration, run_calibration

    targets_rps = None
    if args.vs:
        targets_rps = {}
        for row in read_rows(args.vs):
            if row["rps"] and row["mode"] == "closed" and row["test"] in LOADS:
                key = f"{row['target']} {row['test']}"
                targets_rps[key] = max(targets_rps.get(key, 0.0), float(row["rps"]))
    result = run_calibration(targets_rps, duration_s=args.duration)
    print(format_calibration(result))
    return 0
