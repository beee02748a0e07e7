"""The bodies of ``benchlab run``, ``verify`` and ``calibrate``: argument checks, the lab, the run
directory and its metadata around the step loop (``runner.Runner``). ``cli`` only parses."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path
from typing import Any

from benchlab.cli import one_workers_value
from benchlab.config.scenario import PlannedStep, Scenario, load_scenario, with_sweeps
from benchlab.config.settings import settings
from benchlab.contract import TESTS
from benchlab.cpus import RoleCpus, check_workers
from benchlab.engines import BY_MODE, for_mode
from benchlab.errors import BenchlabError
from benchlab.interpreters import find_interpreter
from benchlab.lab import choose_targets, open_lab
from benchlab.measurement import ensure_open_files
from benchlab.metadata import run_metadata, target_info
from benchlab.model.codec import CSV_NAME, iter_done_steps, read_steps
from benchlab.model.level import AXIS_NAMES, Axes
from benchlab.model.modes import LoadMode
from benchlab.model.status import MEASURED, Status
from benchlab.progress import Progress
from benchlab.rundir import SCENARIO_COPY, check_out_dir, new_run_dir, read_run_json, write_run_json
from benchlab.runner import Runner, now, peaks_from, step_id
from benchlab.sampling import owner_alive, process_identity
from benchlab.targets import Target, parse_overrides, split_names
from benchlab.verification import format_checks, verify_targets


def check_limits(steps: list[PlannedStep]) -> dict[str, Any]:
    """Tools present (k6 the pinned binary) and the open-file limit high enough, before anything
    starts. The closed-loop engine is always recorded; the others when a step needs them."""
    modes = {LoadMode.CLOSED} | {LoadMode(s.mode) for s in steps}
    engines = {BY_MODE[m].name: BY_MODE[m]().provenance() for m in BY_MODE if m in modes}
    ensure_open_files(max((for_mode(s.mode).connections(s) for s in steps), default=0))
    return engines


def check_setups(scenario: Scenario, cpus: RoleCpus, native: bool) -> None:
    """Swept axes the lab can give, before anything starts: a native lab (it restarts the
    targets), the CPUs the workers need, every Python installed (refused with how to get it)."""
    swept = [a for a in AXIS_NAMES if scenario.swept(a)]
    if swept and not native:
        raise BenchlabError(f"sweeping {', '.join(swept)} restarts the targets, which only a native lab can: "
                            "add --native")  # fmt: skip
    check_workers(tuple(scenario.swept("workers")), cpus)
    for version in scenario.swept("python"):
        find_interpreter(version)


def _select_tests(steps: list[PlannedStep], wanted: list[str]) -> list[PlannedStep]:
    unknown = [t for t in wanted if t not in TESTS]
    if unknown:
        raise BenchlabError(f"unknown test {unknown[0]!r}; known tests: {', '.join(TESTS)}")
    kept = [s for s in steps if s.test in wanted] if wanted else steps
    if not kept:
        raise BenchlabError(f"the scenario has no steps for {', '.join(wanted)}")
    return kept


def plan_run(args: argparse.Namespace) -> tuple[dict[str, Any], Scenario, list[Target], list[PlannedStep], list[str]]:
    """What ``run`` (or ``--resume``) measures, checked before anything starts: the run.json being
    resumed (empty for a new run), the scenario, the targets, the steps and the tests selected."""
    if args.resume:
        run_dir = Path(args.resume)
        meta = read_run_json(run_dir)
        mode = "native" if args.native else settings().mode
        if meta.get("mode", mode) != mode:  # its figures would mix two labs
            hint = ": add --native" if meta["mode"] == "native" else ""
            raise BenchlabError(f"{run_dir} is a {meta['mode']} run; it cannot be resumed in {mode} mode{hint}")
        scenario = load_scenario(str(run_dir / SCENARIO_COPY))
        names = list(meta["targets"])
        tests = meta.get("tests_selected") or []
    else:
        scenario = load_scenario(args.scenario)
        scenario = with_sweeps(scenario, workers=args.workers, python=args.python)
        names = split_names(args.targets) or scenario.target_names()
        tests = split_names(args.tests, "--tests")
        meta = {}
    check_setups(scenario, RoleCpus.from_env(), args.native)
    targets = choose_targets(names, parse_overrides(args.target), args.native)
    return meta, scenario, targets, _select_tests(scenario.plan(targets), tests), tests


def run_command(args: argparse.Namespace) -> int:
    """The ``benchlab run`` command; returns the exit code (0: every step measured)."""
    if "loadgen" in (getattr(args, "host_specs", None) or {}):
        from benchlab.hosts.remote import remote_run

        return remote_run(args)
    cpus = RoleCpus.from_env()
    meta, scenario, targets, steps, tests = plan_run(args)
    run_dir, run_id = (Path(args.resume), meta["run_id"]) if args.resume else (Path(args.out), "")
    engines = check_limits(steps)
    profiler, profile_meta = None, None
    if args.profile or scenario.profile or meta.get("profile"):
        from benchlab.profiling.prepare import prepare_profiler

        profiler, profile_meta = prepare_profiler(targets, args.native, scenario.repeats, scenario.profiled_setups())
    check_out_dir(run_dir if args.resume else Path(args.out))
    profiled = len({(s.target, s.test) for s in steps}) if profiler else 0  # one profiled step each
    progress = Progress(total=len(steps) + profiled)
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
        with open_lab(args, targets, cpus, setup=steps[0].setup) as lab:
            if cpus.loadgen:
                os.sched_setaffinity(0, cpus.loadgen)
            target_meta = {t.name: target_info(t) for t in targets}
            if profiler is not None and profile_meta is not None and profiler.lab_check is not None:
                profile_meta.update(profiler.lab_check(targets, target_meta))  # before any step
            if args.resume:
                meta.setdefault("resumed_at", []).append(now())
                meta.update(status="running", finished_at=None)
                meta.pop("error", None)
            else:
                run_dir, run_id = new_run_dir(Path(args.out), scenario.name, scenario.to_yaml())
                meta = run_metadata(
                    run_id=run_id, scenario=scenario.to_dict(), scenario_name=scenario.name,
                    mode=lab.mode, cpus=cpus, targets=target_meta, engines=engines, database=lab.database,
                    started_at=now(),
                )  # fmt: skip
                meta["tests_selected"] = tests  # --resume finishes the same selection
                if profile_meta:
                    meta["profile"] = profile_meta  # --resume profiles too
            meta["process"] = process_identity()  # a resume tells a dead run from a running one by it
            if lab.annotate:
                lab.annotate(meta)
            progress.message(f"run {run_id} -> {run_dir}")
            write_run_json(run_dir, meta)
            runner = Runner(
                run_dir=run_dir, run_id=run_id, scenario=scenario, lab=lab, steps=steps, progress=progress,
                done=set(iter_done_steps(run_dir)), peaks=peaks_from(run_dir), target_meta=target_meta,
                profiler=profiler,
            )  # fmt: skip
            if profiler is not None and args.resume:
                profiler.seed(read_steps(run_dir, warn=False), steps)
            progress.advance(len(runner.done & {step_id(s) for s in steps}))
            with progress:
                runner.execute()
            if runner.query_counts_verified is not None:
                meta.setdefault("database", {})["query_counts_verified"] = runner.query_counts_verified
            counts = Counter(s.status.status for s in read_steps(run_dir))
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
    progress.message(f"results: {run_dir / CSV_NAME}")
    if not args.no_report:
        _report(run_dir, progress, args.claims)
    recorded = read_steps(run_dir)
    failed = [s for s in recorded if not s.status.measured]
    if failed:
        progress.message(f"{len(failed)} of {len(recorded)} steps not measured: see the verification column")
    return 1 if failed else 0


def _report(run_dir: Path, progress: Progress, claims: Path | None) -> None:
    """The run ends with its report; a report that cannot be made does not fail the run."""
    from benchlab.report.build import build_report

    try:
        progress.message(f"report: {build_report(run_dir, claims_path=claims)}")
    except BenchlabError as exc:
        progress.message(f"no report: {exc}")


def verify_command(args: argparse.Namespace) -> int:
    targets = choose_targets(split_names(args.targets), parse_overrides(args.target), args.native)
    tests = split_names(args.tests, "--tests") or None
    unknown = [t for t in tests or [] if t not in TESTS]
    if unknown:  # before any wait for the targets or start of the lab
        raise BenchlabError(f"unknown test {unknown[0]!r}; known tests: {', '.join(TESTS)}")
    workers = one_workers_value(args) if args.native else None
    setup = Axes(workers=workers)
    with open_lab(args, targets, RoleCpus.from_env(), ready_timeout_s="30", setup=setup) as lab:
        checks = verify_targets(targets, tests, lab.dsn, upstream_url=lab.upstream_url)
    print(format_checks(checks))
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def calibrate_command(args: argparse.Namespace) -> int:
    from benchlab.calibrate import LOADS, format_calibration, run_calibration

    targets_rps = None
    if args.vs:
        targets_rps = {}
        for step in read_steps(args.vs):
            if step.rps and step.mode == LoadMode.CLOSED and step.test in LOADS:
                key = f"{step.target} {step.test}"
                targets_rps[key] = max(targets_rps.get(key, 0.0), step.rps)
    result = run_calibration(targets_rps, duration_s=args.duration)
    print(format_calibration(result))
    return 0
