"""The profiled step: after a target × test's measured steps, one more at its peak level with
py-spy attached. Its row (mode ``profiled``) never counts in peaks, charts or claims; its
throughput against the unprofiled peak at the same level is the profiler's overhead, on the row.
A sweep is profiled on each test's last setup (most workers, newest Python), the one reports compare on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from benchlab.config.scenario import PlannedStep
from benchlab.engines import for_mode
from benchlab.errors import BenchlabError
from benchlab.measurement import Measurement
from benchlab.model.codec import RAW_DIR, ResultsWriter
from benchlab.model.level import Axes, Level
from benchlab.model.modes import LoadMode
from benchlab.model.status import Status, StepStatus, judge
from benchlab.model.step import Step
from benchlab.profiling.breakdown import append_rows, breakdown, rows
from benchlab.profiling.flamegraph import write_flamegraph
from benchlab.profiling.pyspy import DEFAULT_RATE_HZ
from benchlab.profiling.recorder import RecorderFactory
from benchlab.profiling.speedscope import read_speedscope
from benchlab.runner import Runner, _raw_name, _request, now, step_id
from benchlab.sampling import INFO_PATH
from benchlab.targets import Target

PROFILES_DIR = "profiles"


def profile_paths(run_dir: Path, target: str, test: str) -> tuple[Path, Path]:
    """``profiles/<target>/<test>.speedscope.json`` and the flame graph beside it."""
    base = run_dir / PROFILES_DIR / target
    return base / f"{test}.speedscope.json", base / f"{test}.svg"


@dataclass
class Profiler:
    """What the runner calls: ``observe`` each measured step, ``after_test`` at a test's end."""

    recorder: RecorderFactory  # py-spy run here (native) or by the target's sidecar (compose)
    repeats: int
    setups: Mapping[str, Axes] = field(default_factory=dict)  # test -> the setup it is profiled on (its last)
    rate_hz: int = DEFAULT_RATE_HZ
    # run once the lab is up, before the run: refuses what cannot be profiled, returns run.json's facts
    lab_check: Callable[[list[Target], dict[str, dict[str, Any]]], dict[str, Any]] | None = None
    _levels: dict[tuple[str, str], dict[Level, list[float]]] = field(default_factory=dict)
    _steps: dict[tuple[str, str, Level], PlannedStep] = field(default_factory=dict)

    def wants(self, repeat: int, setup: Axes, test: str) -> bool:
        """Whether a test's block of steps ends with the profiled step: its last repeat, on the setup
        profiled."""
        return repeat == self.repeats and self._profiled_on(setup, test)

    def _profiled_on(self, setup: Axes, test: str) -> bool:
        return setup == self.setups.get(test, Axes())

    def observe(self, step: PlannedStep, m: Measurement, status: StepStatus) -> None:
        """Keeps a measured closed-loop step's throughput (a few errors allowed: the peak level
        is where to look, even when wrk saw some timeouts there)."""
        if step.mode == LoadMode.CLOSED and status.measured and self._profiled_on(step.setup, step.test):
            self._keep(step, m.rps)

    def seed(self, recorded: list[Step], planned: list[PlannedStep]) -> None:
        """A resumed run: the closed-loop steps measured before it, for the levels to profile."""
        by_id = {step_id(s): s for s in planned}
        for r in recorded:
            step = by_id.get(r.step_id)
            if step is not None and step.mode == LoadMode.CLOSED and r.ok and r.rps \
                    and self._profiled_on(step.setup, step.test):  # fmt: skip
                self._keep(step, r.rps)

    def _keep(self, step: PlannedStep, rps: float) -> None:
        level = Level(step.concurrency, step.pipeline, step.queries)
        self._levels.setdefault((step.target, step.test), {}).setdefault(level, []).append(rps)
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
        if not self.wants(repeat, runner.lab.setup, test) or not verdict.measured:
            return
        found = self.peak(target.name, test)
        if found is None:
            return  # nothing measured to profile against: the test's own rows say why
        measured, unprofiled_rps = found
        step = replace(measured, mode=LoadMode.PROFILED)
        sid = step_id(step)
        if sid in runner.done:
            return
        time.sleep(runner.scenario.pause_s)
        started = now()
        speedscope, svg = profile_paths(runner.run_dir, target.name, test)
        runner.progress.live(f"{target.name} {test}: profiled step at c={step.concurrency}", step.duration_s)
        pid = _target_pid(target)
        recorder = self.recorder(target, pid, speedscope, self.rate_hz) if pid is not None else None
        problem = recorder.start() if recorder is not None else "not profiled: the target does not report its process"
        if recorder is None or problem:
            runner._write(writer, target, step, None, None, StepStatus(Status.ERROR, problem or ""), started)
            return
        sampler = runner.sampler(target, test)
        engine = for_mode(step.mode)
        load = engine.load_for(step, runner.scenario.timeout_s, None)
        assert not isinstance(load, str)  # closed loop always has a load
        try:
            with sampler:
                m = engine.run(_request(target, step), load, runner.run_dir / RAW_DIR / _raw_name(sid, "step"))
        except BenchlabError as exc:
            runner._write(writer, target, step, None, sampler.result, StepStatus(Status.ERROR, str(exc)), started)
            return
        finally:
            failed = recorder.stop()  # also on Ctrl-C: py-spy runs in its own session and would go on
        status = judge(verdict, m)
        if recorder.died:
            status = StepStatus(Status.ERROR, f"worker(s) {', '.join(map(str, recorder.died))} died mid-profile")
        elif failed:
            status = StepStatus(Status.ERROR, failed)
        overhead = 1 - m.rps / unprofiled_rps if unprofiled_rps else None
        runner._write(writer, target, step, m, sampler.result, status, started, profiler_overhead=overhead)
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
