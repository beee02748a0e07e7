"""The profiled step: after a target × test's measured steps, one more at its peak level with
py-spy attached. Its row (mode ``profiled``) never counts in peaks, charts or claims; its
throughput against the unprofiled peak at the same level is the profiler's overhead, on the row.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchlab.engines import Load, for_mode
from benchlab.errors import BenchlabError
from benchlab.measurement import Measurement
from benchlab.profiling.breakdown import append_rows, breakdown, rows
from benchlab.profiling.flamegraph import write_flamegraph
from benchlab.profiling.pyspy import DEFAULT_RATE_HZ, Recorder
from benchlab.profiling.speedscope import read_speedscope
from benchlab.results import PROFILED, RAW_DIR, ResultsWriter
from benchlab.runner import Runner, _raw_name, _request, now, step_id
from benchlab.sampling import INFO_PATH, StepSampler, process_tree
from benchlab.scenarios import PlannedStep
from benchlab.status import Status, StepStatus, judge
from benchlab.targets import Target

PROFILES_DIR = "profiles"
Level = tuple[int, int, int | None]  # concurrency, pipeline, queries


def profile_paths(run_dir: Path, target: str, test: str) -> tuple[Path, Path]:
    """``profiles/<target>/<test>.speedscope.json`` and the flame graph beside it."""
    base = run_dir / PROFILES_DIR / target
    return base / f"{test}.speedscope.json", base / f"{test}.svg"


@dataclass
class Profiler:
    """What the runner calls: ``observe`` each measured step, ``after_test`` at a test's end."""

    binary: str
    repeats: int
    rate_hz: int = DEFAULT_RATE_HZ
    _levels: dict[tuple[str, str], dict[Level, list[float]]] = field(default_factory=dict)
    _steps: dict[tuple[str, str, Level], PlannedStep] = field(default_factory=dict)

    def observe(self, step: PlannedStep, m: Measurement, status: StepStatus) -> None:
        """Keeps a measured closed-loop step's throughput (a few errors allowed: the peak level
        is where to look, even when wrk saw some timeouts there)."""
        if step.mode == "closed" and status.measured:
            level = (step.concurrency, step.pipeline, step.queries)
            self._levels.setdefault((step.target, step.test), {}).setdefault(level, []).append(m.rps)
            self._steps[(step.target, step.test, level)] = step

    def seed(self, rows: list[dict[str, str]]) -> None:
        """A resumed run: the closed-loop steps measured before it, for the levels to profile."""
        for r in rows:
            if r["mode"] == "closed" and r["rps"] and StepStatus.parse(r["verification"]).measured:
                q = int(r["queries"]) if r["queries"] else None
                step = PlannedStep(r["target"], r["test"], "closed", int(r["concurrency"]), int(r["pipeline"]), q,
                                   int(r["repeat"]), float(round(float(r["duration_s"]))))  # fmt: skip
                level = (step.concurrency, step.pipeline, step.queries)
                self._levels.setdefault((step.target, step.test), {}).setdefault(level, []).append(float(r["rps"]))
                self._steps.setdefault((step.target, step.test, level), step)

    def peak(self, target: str, test: str) -> tuple[PlannedStep, float] | None:
        """The level with the highest mean throughput over the repeats, and that mean."""
        levels = self._levels.get((target, test))
        if not levels:
            return None
        level, rps = max(((lv, sum(v) / len(v)) for lv, v in levels.items()), key=lambda kv: kv[1])
        return self._steps[(target, test, level)], rps

    def after_test(self, runner: Runner, writer: ResultsWriter, target: Target, test: str, repeat: int,
                   verdict: StepStatus) -> None:  # fmt: skip
        """Profiles the test once, after its last repeat."""
        if repeat != self.repeats or not verdict.measured:
            return
        found = self.peak(target.name, test)
        if found is None:
            return  # nothing measured to profile against: the test's own rows say why
        measured, unprofiled_rps = found
        step = replace(measured, mode=PROFILED)
        sid = step_id(step)
        if sid in runner.done:
            return
        time.sleep(runner.scenario.pause_s)
        started = now()
        speedscope, svg = profile_paths(runner.run_dir, target.name, test)
        runner.progress.live(f"{target.name} {test}: profiled step at c={step.concurrency}", step.duration_s)
        pid = _target_pid(target)
        if pid is None or not psutil.pid_exists(pid):
            why = StepStatus(Status.ERROR, "not profiled: the target's process cannot be seen from here")
            runner._write(writer, target, step, None, None, why, started)
            return
        workers = {p.pid for p in process_tree(pid)}
        recorder = Recorder(self.binary, pid, speedscope, self.rate_hz)
        sampler = StepSampler(target.url, db_processes=runner.lab.db_processes)
        load = Load(duration_s=step.duration_s, timeout_s=runner.scenario.timeout_s, connections=step.concurrency,
                    pipeline=step.pipeline)  # fmt: skip
        recorder.start()
        try:
            with sampler:
                m = for_mode("closed").run(_request(target, step), load,
                                           runner.run_dir / RAW_DIR / _raw_name(sid, "step"))  # fmt: skip
        except BenchlabError as exc:
            runner._write(writer, target, step, None, sampler.result, StepStatus(Status.ERROR, str(exc)), started)
            return
        finally:
            failed = recorder.stop()  # also on Ctrl-C: py-spy runs in its own session and would go on
        status = judge(verdict, m)
        died = sorted(workers - {p.pid for p in process_tree(pid)})
        if died:
            status = StepStatus(Status.ERROR, f"worker(s) {', '.join(map(str, died))} died mid-profile")
        elif failed:
            status = StepStatus(Status.ERROR, failed)
        overhead = 1 - m.rps / unprofiled_rps if unprofiled_rps else None
        extra: dict[str, Any] = {"profiler_overhead": overhead}
        runner._write(writer, target, step, m, sampler.result, status, started, extra)
        if status.measured and speedscope.is_file():
            try:
                self._analyse(runner.run_dir, target.name, test, speedscope, svg, recorder.seconds, m, sampler.result)
            except BenchlabError as exc:  # an unreadable profile costs this profile, not the run
                runner.progress.message(f"{target.name} {test}: no profile.csv rows: {exc}")
        shown = "" if status.status is Status.PASS else f" [{status}]"
        lost = f", {overhead:.0%} below unprofiled" if overhead is not None else ""
        if recorder.cpu_seconds is not None and recorder.seconds:
            lost += f", py-spy used {recorder.cpu_seconds / recorder.seconds:.2f} cores"
        runner.progress.step_done(f"{target.name} {test} profiled: {m.rps:,.0f} req/s{lost}{shown}")

    def _analyse(self, run_dir: Path, target: str, test: str, speedscope: Path, svg: Path, seconds: float,
                 m: Measurement, samples: Any) -> None:  # fmt: skip
        recording = read_speedscope(speedscope)
        b = breakdown(recording, ticks=round(seconds * self.rate_hz))
        cores = samples.server_cpu_cores if samples is not None else None
        cpu_seconds = cores * m.duration_s if cores is not None else None
        append_rows(run_dir, rows(target, test, b, cpu_seconds, m.requests))
        write_flamegraph(b.stacks, svg, f"{target} {test}: {b.busy:,} samples (idle left out)", b.frame_component)


def _target_pid(target: Target) -> int | None:
    """The target's master, as it reports itself (``/benchlab/info``)."""
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        resp = httpx.get(target.url.rstrip("/") + INFO_PATH, timeout=5)
        return int(resp.json()["target_pid"])
    return None
