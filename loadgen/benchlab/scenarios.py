"""Scenarios: what a run measures, read from YAML and checked before anything starts.

A scenario names the tests and their levels (concurrency, pipelining depth, query counts),
the step duration, pauses, primer and warm-up, repeats and optional open-loop steps.
``plan()`` expands it into the ordered list of measured steps: repeats outermost (so slow
drift on the host spreads over every target), then target, then test; within a test the
closed-loop levels come first and its open-loop steps last, since a rate given as a
fraction is a fraction of the peak the closed-loop levels just measured.

Built-in scenarios live in ``benchlab/scenarios/*.yaml``; see ``tfb.yaml`` for every key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchlab.contract import MAX_QUERIES, TEST_TYPES, TESTS
from benchlab.errors import BenchlabError
from benchlab.model.modes import LoadMode
from benchlab.targets import GROUPS, Target, selection_error
from benchlab.validate import Checker
from benchlab.yamlfile import load_yaml

SCENARIO_DIR = Path(__file__).with_name("scenarios")
DEFAULT_P99_MS = 100.0  # open loop: the p99 bound of the sustainable rate, unless the scenario states one


@dataclass(frozen=True)
class PlannedStep:
    """One measured step. Closed loop: ``concurrency`` wrk connections (``pipeline`` requests
    per write). Open loop: k6 at ``rate`` req/s, or at ``rate_fraction`` of the peak closed-loop
    rps measured for the same target and test, with ``concurrency`` pre-allocated VUs and at
    most ``max_vus``."""

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

    def url_path(self) -> str:
        """``/queries?queries=5``, ``/cached-queries?count=20``, ``/json``."""
        return TEST_TYPES[self.test].path_for(self.queries)

    def headers(self) -> dict[str, str]:
        """The request headers TechEmpower's load sends for this test."""
        return TEST_TYPES[self.test].headers()


@dataclass(frozen=True)
class Primer:
    duration_s: int
    connections: int


@dataclass(frozen=True)
class TestLevels:
    concurrency: tuple[int, ...]
    pipeline: int = 1
    queries: tuple[int, ...] | None = None


@dataclass(frozen=True)
class OpenLoop:
    tests: tuple[str, ...]
    rates: tuple[float, ...]
    fractions: tuple[float, ...]
    duration_s: float
    vus: int
    max_vus: int
    queries: int | None = None
    p99_ms: float = DEFAULT_P99_MS  # the latency bound of the sustainable rate (benchlab.capacity)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: int
    pause_s: float
    primer: Primer
    warmup: bool | int
    repeats: int
    targets: tuple[str, ...] | None  # None: not stated, the default selection (lab.default_targets)
    tests: dict[str, TestLevels]
    open_loop: OpenLoop | None = None
    timeout_s: float = 8.0
    source: Path | None = field(default=None, compare=False)

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
        steps: list[PlannedStep] = []
        for repeat in range(1, self.repeats + 1):
            for target in targets:
                for test, levels in self.tests.items():
                    if only is None or test in only:
                        steps += self._closed(target.name, test, levels, repeat)
                        steps += self._open(target.name, test, levels, repeat)
        return steps

    def _closed(self, target: str, test: str, levels: TestLevels, repeat: int) -> list[PlannedStep]:
        return [
            PlannedStep(target, test, LoadMode.CLOSED, c, levels.pipeline, q, repeat, float(self.duration_s))
            for q in levels.queries or (None,)
            for c in levels.concurrency
        ]

    def _open(self, target: str, test: str, levels: TestLevels, repeat: int) -> list[PlannedStep]:
        ol = self.open_loop
        if ol is None or test not in ol.tests:
            return []
        queries = ol.queries if ol.queries is not None else (levels.queries[0] if levels.queries else None)
        if TEST_TYPES[test].param is None:
            queries = None
        common = {"target": target, "test": test, "mode": LoadMode.OPEN, "concurrency": ol.vus, "pipeline": 1,
                  "queries": queries, "repeat": repeat, "duration_s": ol.duration_s, "max_vus": ol.max_vus}  # fmt: skip
        by_rate = [PlannedStep(**common, rate=r) for r in ol.rates]
        return by_rate + [PlannedStep(**common, rate_fraction=f) for f in ol.fractions]

    def estimate_s(self, n_targets: int) -> float:
        """Seconds the load itself takes (primers, warm-ups, pauses, steps) for ``n_targets``
        targets; verification and start-up come on top."""
        per_test = 0.0
        for test in self.tests:
            closed = self._closed("-", test, self.tests[test], 1)
            opened = self._open("-", test, self.tests[test], 1)
            per_test += self.primer.duration_s + self.warmup_duration_s
            per_test += sum(self.pause_s + s.duration_s for s in closed + opened)
        return per_test * n_targets * self.repeats

    def to_dict(self) -> dict[str, Any]:
        """The scenario as run, every default filled in (for run.json and ``to_yaml``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "duration_s": self.duration_s,
            "pause_s": self.pause_s,
            "timeout_s": self.timeout_s,
            "primer": {"duration_s": self.primer.duration_s, "connections": self.primer.connections},
            "warmup": self.warmup,
            "repeats": self.repeats,
            "targets": list(self.targets) if self.targets else None,
            "tests": {},
        }
        for test, lv in self.tests.items():
            entry: dict[str, Any] = {"concurrency": list(lv.concurrency), "pipeline": lv.pipeline}
            if lv.queries is not None:
                entry["queries"] = list(lv.queries)
            out["tests"][test] = entry
        if self.open_loop is not None:
            ol = self.open_loop
            out["open_loop"] = {
                "tests": list(ol.tests), "rates": list(ol.rates), "fractions": list(ol.fractions),
                "duration_s": ol.duration_s, "vus": ol.vus, "max_vus": ol.max_vus, "p99_ms": ol.p99_ms,
            }  # fmt: skip
            if ol.queries is not None:
                out["open_loop"]["queries"] = ol.queries
        return out

    def to_yaml(self) -> str:
        """YAML that ``load_scenario`` reads back into an equal scenario (``--resume`` uses it)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# --- loading and validation ---------------------------------------------------------------


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
    return _Validator(path).scenario(load_yaml(path))


SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_TOP_KEYS = ("name", "description", "duration_s", "pause_s", "timeout_s", "primer", "warmup",
             "repeats", "targets", "tests", "open_loop")  # fmt: skip
_REQUIRED = ("duration_s", "tests")


class _Validator(Checker):
    """Checks a parsed scenario key by key; every problem names the file and key path."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.name)
        self.path = path

    def test_name(self, value: Any, key: str) -> str:
        if value not in TESTS:
            raise self.error(key, f"unknown test {value!r}; tests are {', '.join(TESTS)}")
        return value

    def scenario(self, data: Any) -> Scenario:
        top = self.mapping(data, "", _TOP_KEYS, _REQUIRED)
        name = top.get("name", self.path.stem)
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            # The name becomes part of the run directory's name: no separators, no globs, no spaces.
            raise self.fail("name", "letters, digits, '.', '_' or '-' (at most 64, not starting with '.')", name)
        description = top.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", "a string", description)
        duration = self.pos_int(top["duration_s"], "duration_s")  # wrk takes whole seconds
        return Scenario(
            name=name,
            description=description.strip(),
            duration_s=duration,
            pause_s=self.number(top.get("pause_s", 0), "pause_s", positive=False),
            timeout_s=self.pos_int(top.get("timeout_s", 8), "timeout_s"),  # wrk: whole seconds
            primer=self.primer(top.get("primer", {})),
            warmup=self.warmup(top.get("warmup", False)),
            repeats=self.pos_int(top.get("repeats", 1), "repeats"),
            targets=None if top.get("targets") is None else self.targets(top["targets"]),
            tests=self.tests(top["tests"]),
            open_loop=self.open_loop(top.get("open_loop"), top["tests"], duration),
            source=self.path,
        )

    def primer(self, value: Any) -> Primer:
        p = self.mapping(value, "primer", ("duration_s", "connections"))
        return Primer(
            duration_s=self.pos_int(p.get("duration_s", 5), "primer.duration_s"),
            connections=self.pos_int(p.get("connections", 8), "primer.connections"),
        )

    def warmup(self, value: Any) -> bool | int:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value >= 1:
            return value
        raise self.fail("warmup", "true, false or a whole number of seconds", value)

    def targets(self, value: Any) -> tuple[str, ...]:
        """Target names and groups (``core``, ``servers``, ``style``, ``baselines``, ``all``)."""
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail("targets", "a group (all, " + ", ".join(GROUPS) + ") or a list of target names", value)
        for v in value:
            problem = selection_error(v)
            if problem:
                raise self.error("targets", problem)
        return tuple(value)

    def tests(self, value: Any) -> dict[str, TestLevels]:
        if not isinstance(value, Mapping) or not value:
            raise self.fail("tests", f"a mapping of test name to levels (tests: {', '.join(TESTS)})", value)
        out = {}
        for test, spec in value.items():
            key = f"tests.{self.test_name(test, 'tests')}"
            takes_queries = TEST_TYPES[test].param is not None
            allowed = ("concurrency", "pipeline", "queries") if takes_queries else ("concurrency", "pipeline")
            lv = self.mapping(spec, key, allowed, ("concurrency", "queries") if takes_queries else ("concurrency",))
            queries = None
            if takes_queries:
                queries = self.int_list(lv["queries"], f"{key}.queries", maximum=MAX_QUERIES)
            out[test] = TestLevels(
                concurrency=self.int_list(lv["concurrency"], f"{key}.concurrency"),
                pipeline=self.pos_int(lv.get("pipeline", 1), f"{key}.pipeline"),
                queries=queries,
            )
        return out

    def open_loop(self, value: Any, tests: Mapping[str, Any], step_duration_s: int) -> OpenLoop | None:
        if value is None:
            return None
        keys = ("tests", "rates", "fractions", "duration_s", "vus", "max_vus", "queries", "p99_ms")
        ol = self.mapping(value, "open_loop", keys)
        names = ol.get("tests")
        if not isinstance(names, list) or not names:
            raise self.fail("open_loop.tests", "a list of test names", names)
        chosen = tuple(self.test_name(t, "open_loop.tests") for t in names)
        # k6 starts whole iterations per second: a rate is a whole number, or it would be rounded.
        rates = self.num_list(ol.get("rates", []), "open_loop.rates")
        for r in rates:
            if r < 1 or not r.is_integer():
                raise self.fail("open_loop.rates", "a positive integer (req/s)", r)
        fractions = self.num_list(ol.get("fractions", []), "open_loop.fractions")
        if not rates and not fractions:
            raise self.error("open_loop", "give rates (req/s) or fractions (of the peak)")
        if fractions:
            for t in chosen:
                if t not in tests:
                    raise self.error(
                        "open_loop.tests", f"{t!r} has fractions but no closed-loop levels "
                        "in tests to measure its peak"
                    )
        vus = self.pos_int(ol.get("vus", 64), "open_loop.vus")
        max_vus = self.pos_int(ol["max_vus"], "open_loop.max_vus") if "max_vus" in ol else 4 * vus
        if max_vus < vus:
            raise self.fail("open_loop.max_vus", f"at least vus ({vus})", max_vus)
        queries = None
        if "queries" in ol:
            queries = self.pos_int(ol["queries"], "open_loop.queries")
            if queries > MAX_QUERIES:
                raise self.fail("open_loop.queries", f"a positive integer up to {MAX_QUERIES}", queries)
        duration = float(step_duration_s)
        if "duration_s" in ol:
            duration = self.number(ol["duration_s"], "open_loop.duration_s", positive=True)
        p99_ms = self.number(ol.get("p99_ms", DEFAULT_P99_MS), "open_loop.p99_ms", positive=True)
        return OpenLoop(
            p99_ms=p99_ms,
            tests=chosen,
            rates=rates,
            fractions=fractions,
            duration_s=duration,
            vus=vus,
            max_vus=max_vus,
            queries=queries,
        )
