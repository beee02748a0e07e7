"""Scenarios: what a run measures, read from YAML and checked before anything starts.

A scenario names the tests and their levels (concurrency, pipelining depth, query counts),
the step duration, pauses, primer and warm-up, repeats, optional open-loop steps and the lab
axes to sweep (``workers``, ``python``): for every test, or for one test (its own sweep and
``targets`` narrow what that test runs, so a scenario pays only for what it asks). ``plan()``
expands it into the ordered list of measured steps:
repeats outermost (so slow drift on the host spreads over every target), then the axes, then
target, then test; within a test the closed-loop levels come first and its open-loop steps
last, since a rate given as a fraction is a fraction of the peak the closed-loop levels just
measured.

The schema is the pydantic models below, declared once; built-in scenarios live in
``benchlab/scenarios/*.yaml`` (see ``tfb.yaml`` for every key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, ValidationError, model_validator

from benchlab.config.fields import (
    NonNegNumber,
    NumList,
    PosInt,
    PosNumber,
    Strict,
    at,
    expected,
    int_list,
    one_line,
    read_model,
    wrong,
)
from benchlab.contract import MAX_QUERIES, TEST_TYPES, TESTS
from benchlab.errors import BenchlabError
from benchlab.model.level import AXIS_NAMES, Axes
from benchlab.model.modes import LoadMode
from benchlab.targets import GROUPS, Target, select, selection_error
from benchlab.yamlfile import load_yaml

SCENARIO_DIR = Path(__file__).parents[1] / "scenarios"
DEFAULT_P99_MS = 100.0  # open loop: the p99 bound of the sustainable rate, unless the scenario states one
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
PYTHON_VERSION = re.compile(r"3\.\d{1,2}t?")


@dataclass(frozen=True)
class PlannedStep:
    """One measured step. Closed loop: ``concurrency`` wrk connections (``pipeline`` requests
    per write). Open loop: k6 at ``rate`` req/s, or at ``rate_fraction`` of the peak closed-loop
    rps measured for the same target and test, with ``concurrency`` pre-allocated VUs and at
    most ``max_vus``. ``setup``: the swept axes' values the target runs with (unset: its default)."""

    target: str
    test: str
    mode: LoadMode
    concurrency: int
    pipeline: int
    queries: int | None
    repeat: int
    duration_s: float
    rate: float | None = None
    rate_fraction: float | None = None
    max_vus: int | None = None
    setup: Axes = field(default_factory=Axes)

    def url_path(self) -> str:
        """``/queries?queries=5``, ``/cached-queries?count=20``, ``/json``."""
        return TEST_TYPES[self.test].path_for(self.queries)

    def headers(self) -> dict[str, str]:
        """The request headers TechEmpower's load sends for this test."""
        return TEST_TYPES[self.test].headers()


def _test_name(v: Any) -> str:
    if v not in TESTS:
        raise wrong(f"unknown test {v!r}; tests are {', '.join(TESTS)}")
    return v


TestName = Annotated[str, BeforeValidator(_test_name)]


def _name(v: Any) -> str:
    # The name becomes part of the run directory's name: no separators, no globs, no spaces.
    if not isinstance(v, str) or not SAFE_NAME.fullmatch(v):
        raise expected("letters, digits, '.', '_' or '-' (at most 64, not starting with '.')", v)
    return v


def _description(v: Any) -> str:
    if not isinstance(v, str):
        raise expected("a string", v)
    return v.strip()


def _warmup(v: Any) -> bool | int:
    if isinstance(v, bool) or (isinstance(v, int) and v >= 1):
        return v
    raise expected("true, false or a whole number of seconds", v)


def _targets(v: Any) -> tuple[str, ...]:
    """Target names and groups (``core``, ``servers``, ``style``, ``baselines``, ``all``)."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise expected("a group (all, " + ", ".join(GROUPS) + ") or a list of target names", v)
    for x in v:
        problem = selection_error(x)
        if problem:
            raise wrong(problem)
    return tuple(v)


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise expected("true or false", v)
    return v


def _open_tests(v: Any) -> Any:
    if not isinstance(v, list) or not v:
        raise expected("a list of test names", v)
    return v


def _one_query_count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_QUERIES:
        raise expected(f"a positive integer up to {MAX_QUERIES}", v)
    return v


def _pythons(v: Any) -> tuple[str, ...]:
    """Interpreter versions: ``3.13``, ``"3.14t"`` (free-threaded); YAML reads 3.13 as a number."""
    values = v if isinstance(v, list) else None
    if not values:
        raise expected("a list of Python versions like 3.13 or '3.14t'", v)
    out = tuple(f"{x:g}" if isinstance(x, float) else str(x) for x in values)
    for x in out:
        if not PYTHON_VERSION.fullmatch(x):
            raise expected("a list of Python versions like 3.13 or '3.14t'", x)
    if len(set(out)) != len(out):
        raise expected("a list of Python versions without repeats", v)
    return out


def _rates(v: tuple[float, ...]) -> tuple[float, ...]:
    # k6 starts whole iterations per second: a rate is a whole number, or it would be rounded.
    for r in v:
        if r < 1 or not r.is_integer():
            raise expected("a positive integer (req/s)", r)
    return v


class Primer(Strict):
    duration_s: PosInt = 5
    connections: PosInt = 8


class Sweeps(Strict):
    """The lab axes to sweep, one field per sweepable ``model.level.Axes`` field of the same name
    (None: each target's default). A scenario's apply to every test; a test's own replace them."""

    workers: Annotated[tuple[int, ...], int_list()] | None = None
    python: Annotated[tuple[str, ...], BeforeValidator(_pythons)] | None = None  # None: the lab's own


class TestLevels(Sweeps):
    concurrency: Annotated[tuple[int, ...], int_list()]
    pipeline: PosInt = 1
    queries: Annotated[tuple[int, ...], int_list()] | None = None  # at most the test's param_max
    targets: Annotated[tuple[str, ...], BeforeValidator(_targets)] | None = None  # None: every target run


class OpenLoop(Strict):
    tests: Annotated[tuple[TestName, ...], BeforeValidator(_open_tests)]
    rates: Annotated[NumList, AfterValidator(_rates)] = ()
    fractions: NumList = ()
    duration_s: PosNumber | None = None  # None: the scenario's step duration
    vus: PosInt = 64
    max_vus: PosInt | None = None  # None: 4 x vus
    queries: Annotated[int, BeforeValidator(_one_query_count)] | None = None
    p99_ms: PosNumber = DEFAULT_P99_MS  # the latency bound of the sustainable rate (benchlab.analysis.capacity)

    @model_validator(mode="after")
    def _consistent(self) -> OpenLoop:
        if not self.rates and not self.fractions:
            raise at("open_loop", "give rates (req/s) or fractions (of the peak)")
        if self.max_vus is None:
            object.__setattr__(self, "max_vus", 4 * self.vus)
        elif self.max_vus < self.vus:
            raise at("open_loop.max_vus", f"expected at least vus ({self.vus}), got {self.max_vus}")
        return self


class Scenario(Sweeps):
    name: Annotated[str, BeforeValidator(_name)]
    description: Annotated[str, BeforeValidator(_description)] = ""
    duration_s: PosInt  # wrk takes whole seconds
    pause_s: NonNegNumber = 0.0
    # After the pause, how long a step waits for its target to finish the last step's work (a
    # server keeps working off requests whose client left); a step that starts on a busy server
    # anyway is flagged.
    settle_s: NonNegNumber = 15.0
    timeout_s: PosInt = 8  # wrk: whole seconds
    primer: Primer = Primer()
    warmup: Annotated[bool | int, BeforeValidator(_warmup)] = False
    repeats: PosInt = 1
    targets: Annotated[tuple[str, ...], BeforeValidator(_targets)] | None = None  # None: the default selection
    tests: dict[TestName, TestLevels]
    open_loop: OpenLoop | None = None
    # One more step per target x test at its peak, py-spy attached (--profile; never counted).
    profile: Annotated[bool, BeforeValidator(_flag)] = False

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tests" in data and (not isinstance(data["tests"], dict) or not data["tests"]):
            raise at("tests", f"expected a mapping of test name to levels (tests: {', '.join(TESTS)}), "
                              f"got {data['tests']!r}")  # fmt: skip
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        for test, levels in self.tests.items():
            takes = TEST_TYPES[test].param is not None
            if takes and levels.queries is None:
                raise at(f"tests.{test}.queries", "required key missing")
            if not takes and levels.queries is not None:
                raise at(f"tests.{test}.queries", "unknown key; expected one of concurrency, pipeline")
            top = TEST_TYPES[test].param_max
            over = [q for q in levels.queries or () if q > top]
            if over:
                raise at(f"tests.{test}.queries", f"expected a list of positive integers up to {top}, got {over[0]}")
        ol = self.open_loop
        if ol is not None:
            if ol.fractions:
                for t in ol.tests:
                    if t not in self.tests:
                        raise at("open_loop.tests", f"{t!r} has fractions but no closed-loop levels "
                                                    "in tests to measure its peak")  # fmt: skip
            if ol.duration_s is None:
                object.__setattr__(ol, "duration_s", float(self.duration_s))
        return self

    @property
    def warmup_duration_s(self) -> float:
        """Seconds of warm-up at the highest level before a test's steps (0: none).
        ``warmup: true`` is TechEmpower's: one full step duration."""
        if self.warmup is True:
            return float(self.duration_s)
        return float(self.warmup or 0)

    def target_names(self) -> list[str]:
        """The target names and groups this scenario selects (``load_targets`` resolves them);
        empty when it does not say."""
        return list(self.targets or [])

    def plan(self, targets: Iterable[Target], tests: Iterable[str] | None = None) -> list[PlannedStep]:
        """Every measured step, in run order, for ``targets`` (and only ``tests`` if given)."""
        only = set(tests) if tests is not None else None
        targets = list(targets)
        runs = {test: set(select(levels.targets)) if levels.targets else None for test, levels in self.tests.items()}
        on = {test: self.test_setups(test) for test in self.tests}
        setups = self.setups()
        steps: list[PlannedStep] = []
        for repeat in range(1, self.repeats + 1):
            for setup in setups:
                for target in targets:
                    for test, levels in self.tests.items():
                        if (only is None or test in only) and setup in on[test] \
                                and (runs[test] is None or target.name in runs[test]):  # fmt: skip
                            steps += self._closed(target.name, test, levels, repeat, setup)
                            steps += self._open(target.name, test, levels, repeat, setup)
        return steps

    def test_setups(self, test: str) -> list[Axes]:
        """Every combination of the axes ``test`` sweeps (its own lists, else the scenario's), in
        sweep order; one, unset, when it sweeps none."""
        own = self.tests[test]
        swept = {a: values for a in AXIS_NAMES if (values := getattr(own, a) or getattr(self, a))}
        return [Axes(**dict(zip(swept, combo, strict=True))) for combo in product(*swept.values())]

    def setups(self) -> list[Axes]:
        """Every setup some test runs on, in the order the tests first ask for them."""
        return list(dict.fromkeys(s for test in self.tests for s in self.test_setups(test)))

    def profiled_setups(self) -> dict[str, Axes]:
        """The setup each test is profiled on (``--profile``): its sweep's last, which reports compare on."""
        return {test: self.test_setups(test)[-1] for test in self.tests}

    def swept(self, axis: str) -> list[Any]:
        """Every value of ``axis`` the scenario or any of its tests sweeps (checked before a run)."""
        return list(dict.fromkeys(v for s in self.setups() if (v := s.value(axis)) is not None))

    def _closed(self, target: str, test: str, levels: TestLevels, repeat: int, setup: Axes) -> list[PlannedStep]:
        return [
            PlannedStep(target, test, LoadMode.CLOSED, c, levels.pipeline, q, repeat, float(self.duration_s),
                        setup=setup)
            for q in levels.queries or (None,)
            for c in levels.concurrency
        ]

    def _open(self, target: str, test: str, levels: TestLevels, repeat: int, setup: Axes) -> list[PlannedStep]:
        ol = self.open_loop
        if ol is None or test not in ol.tests:
            return []
        queries = ol.queries if ol.queries is not None else (levels.queries[0] if levels.queries else None)
        if TEST_TYPES[test].param is None:
            queries = None
        common = {"target": target, "test": test, "mode": LoadMode.OPEN, "concurrency": ol.vus, "pipeline": 1,
                  "queries": queries, "repeat": repeat, "duration_s": ol.duration_s, "max_vus": ol.max_vus,
                  "setup": setup}  # fmt: skip
        by_rate = [PlannedStep(**common, rate=r) for r in ol.rates]
        return by_rate + [PlannedStep(**common, rate_fraction=f) for f in ol.fractions]

    def estimate_s(self, targets: Iterable[Target]) -> float:
        """Seconds the load itself takes for ``targets`` (primers, warm-ups, pauses, steps);
        verification and start-up come on top."""
        steps = self.plan(targets)
        tests_run = {(s.repeat, s.setup, s.target, s.test) for s in steps}
        per_test_run = self.primer.duration_s + self.warmup_duration_s
        return len(tests_run) * per_test_run + sum(self.pause_s + s.duration_s for s in steps)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as run, every default filled in (for run.json and ``to_yaml``)."""
        out = self.model_dump(mode="json", exclude_none=True)
        out.setdefault("targets", None)
        return out

    def to_yaml(self) -> str:
        """YAML that ``load_scenario`` reads back into an equal scenario (``--resume`` uses it)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# --- loading ------------------------------------------------------------------------------


def available_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name (``smoke``) or any YAML file by path, validated."""
    path = Path(name_or_path)
    is_path = path.suffix in (".yaml", ".yml") or "/" in name_or_path
    if not is_path:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        what = f"scenario file {name_or_path} not found" if is_path else f"unknown scenario {name_or_path!r}"
        raise BenchlabError(f"{what}; available scenarios: {', '.join(available_scenarios())}")
    data = load_yaml(path)
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return read_model(Scenario, path, data)


def with_sweeps(scenario: Scenario, **sweeps: list[Any] | tuple[Any, ...] | None) -> Scenario:
    """The scenario with axes swept from the command line (``--workers 1,2``, ``--python 3.11,3.13``),
    checked as if they were written in it."""
    given = {axis: list(values) for axis, values in sweeps.items() if values}
    if not given:
        return scenario
    try:
        return Scenario.model_validate({**scenario.to_dict(), **given})
    except ValidationError as exc:
        raise one_line("command line", Scenario, exc) from None
