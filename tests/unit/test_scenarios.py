"""Scenario files: the built-in plans have the expected steps, and malformed files fail clearly."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest

from benchlab.config.scenario import PlannedStep, Scenario, available_scenarios, load_scenario
from benchlab.contract import TFB_TESTS as TESTS  # the built-in scenarios run TechEmpower's tests
from benchlab.errors import BenchlabError
from benchlab.targets import load_targets

TARGETS = load_targets(env={})
TFB_LEVELS = [16, 32, 64, 128, 256, 512]


def test_builtins_are_listed() -> None:
    assert {"smoke", "quick", "tfb", "matrix"} <= set(available_scenarios())


def test_tfb_is_techempower_exactly() -> None:
    s = load_scenario("tfb")
    assert (s.duration_s, s.timeout_s, s.pause_s, s.repeats) == (15, 8, 2, 1)
    assert (s.primer.duration_s, s.primer.connections) == (5, 8)
    assert s.warmup_duration_s == 15
    assert s.open_loop is None
    steps = s.plan(TARGETS[:1])
    levels = {t: [(x.concurrency, x.pipeline, x.queries) for x in steps if x.test == t] for t in TESTS}
    for t in ("json", "db", "fortunes"):
        assert levels[t] == [(c, 1, None) for c in TFB_LEVELS]
    assert levels["plaintext"] == [(c, 16, None) for c in (256, 1024, 4096, 16384)]
    for t in ("queries", "updates"):
        assert levels[t] == [(512, 1, q) for q in (1, 5, 10, 15, 20)]
    assert levels["cached-queries"] == [(512, 1, q) for q in (1, 10, 20, 50, 100)]
    assert all(x.duration_s == 15 and x.mode == "closed" for x in steps)
    assert len(s.plan(TARGETS)) == 3 * len(steps)


def test_smoke_covers_every_test_within_90s() -> None:
    s = load_scenario("smoke")
    steps = s.plan(TARGETS)
    closed = [x for x in steps if x.mode == "closed"]
    assert Counter((x.target, x.test) for x in closed) == {(t.name, test): 1 for t in TARGETS for test in TESTS}
    assert s.warmup_duration_s == 0 and s.repeats == 1
    # The load itself leaves room for start-up and verification in a 90 s smoke run.
    assert s.estimate_s(TARGETS) <= 65


def test_quick_has_two_or_three_levels_two_repeats_under_10_minutes() -> None:
    s = load_scenario("quick")
    steps = s.plan(TARGETS)
    assert s.repeats == 2 and {x.repeat for x in steps} == {1, 2}
    per_test = Counter((x.test) for x in steps if x.mode == "closed" and x.repeat == 1 and x.target == TARGETS[0].name)
    assert set(per_test) == set(TESTS) and all(2 <= n <= 3 for n in per_test.values())
    assert any(x.mode == "open" for x in steps)
    assert s.estimate_s(TARGETS) <= 540  # 10 min less start-up and verification


def test_matrix_runs_every_target_and_test_at_two_levels_twice_within_35_minutes() -> None:
    s = load_scenario("matrix")
    every = load_targets(["all"], env={})
    targets = load_targets(s.target_names(), env={})
    assert targets == every and len(every) == 12
    steps = s.plan(targets)
    assert Counter((x.target, x.test, x.repeat) for x in steps) == {
        (t.name, test, r): 2 for t in every for test in TESTS for r in (1, 2)
    }
    # Start-up, verification of twelve targets and the report get the other 5 minutes.
    assert s.estimate_s(targets) <= 30 * 60


def test_groups_select_their_targets() -> None:
    groups = {g: [t.name for t in load_targets([g], env={})] for g in ("core", "servers", "style", "baselines")}
    assert groups["core"] == [t.name for t in TARGETS] == [t.name for t in load_targets(env={})]
    assert sum(map(len, groups.values())) == len(load_targets(["all"], env={})) == 12
    assert [t.name for t in load_targets(["baselines", "fastapi-uvicorn"], env={})] == [
        "fastapi-uvicorn", "asgi-uvicorn", "wsgi-gunicorn-gevent",
    ]  # fmt: skip
    with pytest.raises(BenchlabError, match=r"unknown target or group 'nope'; groups: all, core, servers"):
        load_targets(["nope"], env={})


def test_plan_order_repeats_outermost_open_loop_after_its_test() -> None:
    steps = load_scenario("quick").plan(TARGETS)
    assert [x.repeat for x in steps] == sorted(x.repeat for x in steps)
    first = steps[: len(steps) // 2]
    assert [x.target for x in first] == sorted((x.target for x in first), key=[t.name for t in TARGETS].index)
    db_steps = [x for x in first if x.target == TARGETS[0].name and x.test == "db"]
    # The open-loop sweep follows its test's closed-loop levels, lowest rate first.
    assert [x.mode for x in db_steps] == ["closed", "closed", "open", "open", "open", "open"]
    opened = db_steps[2:]
    assert [x.rate_fraction for x in opened] == [0.25, 0.5, 0.75, 1.0]
    assert all(x.rate is None and x.max_vus == 512 for x in opened)


def test_plan_can_select_tests() -> None:
    steps = load_scenario("tfb").plan(TARGETS, tests=["queries"])
    assert {x.test for x in steps} == {"queries"}


def test_url_paths() -> None:
    def step(test: str, q: int | None) -> PlannedStep:
        return PlannedStep("t", test, "closed", 1, 1, q, 1, 1.0)

    assert step("json", None).url_path() == "/json"
    assert step("queries", 5).url_path() == "/queries?queries=5"
    assert step("updates", 20).url_path() == "/updates?queries=20"
    assert step("cached-queries", 100).url_path() == "/cached-queries?count=100"
    assert step("plaintext", None).headers()["Accept"].startswith("text/plain")


@pytest.mark.parametrize("name", ["smoke", "quick", "tfb"])
def test_round_trip_through_yaml(name: str, tmp_path: Path) -> None:
    s = load_scenario(name)
    path = tmp_path / "scenario.yaml"
    path.write_text(s.to_yaml())
    again: Scenario = load_scenario(str(path))
    assert again == s
    assert again.plan(TARGETS) == s.plan(TARGETS)


def test_unknown_scenario_lists_available() -> None:
    with pytest.raises(BenchlabError, match=r"unknown scenario 'nope'; available scenarios: .*quick, smoke, tfb"):
        load_scenario("nope")
    with pytest.raises(BenchlabError, match=r"scenario file /no/such\.yaml not found"):
        load_scenario("/no/such.yaml")


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(body))
    return str(path)


GOOD = """\
duration_s: 2
tests:
  json: {concurrency: [16]}
"""

MALFORMED = [
    ("tests:\n  json: {concurrency: [x]}\nduration_s: 2\n",
     "bad.yaml: tests.json.concurrency: expected a list of positive integers, got 'x'"),
    ("tests:\n  json: {concurrency: []}\nduration_s: 2\n", "bad.yaml: tests.json.concurrency: expected a list"),
    ("tests:\n  json: {concurrency: 16}\nduration_s: 2\n", "bad.yaml: tests.json.concurrency: expected a list"),
    ("tests:\n  json: {concurrency: [0]}\nduration_s: 2\n", "bad.yaml: tests.json.concurrency: .* got 0"),
    ("tests:\n  json: {concurrency: [16, 16]}\nduration_s: 2\n", "without repeats"),
    ("tests:\n  json: {concurrency: [16], speed: 3}\nduration_s: 2\n", "bad.yaml: tests.json.speed: unknown key"),
    ("tests:\n  json: {concurrency: [16], queries: [1]}\nduration_s: 2\n", "bad.yaml: tests.json.queries: unknown key"),
    ("tests:\n  queries: {concurrency: [16]}\nduration_s: 2\n", "bad.yaml: tests.queries.queries: required"),
    ("tests:\n  queries: {concurrency: [16], queries: [501]}\nduration_s: 2\n",
     "bad.yaml: tests.queries.queries: expected a list of positive integers up to 500, got 501"),
    ("tests:\n  plaintext: {concurrency: [16], pipeline: 0}\nduration_s: 2\n",
     "bad.yaml: tests.plaintext.pipeline: expected a positive integer, got 0"),
    ("tests:\n  jsno: {concurrency: [16]}\nduration_s: 2\n",
     "bad.yaml: tests: unknown test 'jsno'; tests are json, plaintext, db, queries, fortunes, updates, cached-queries"),
    ("tests: []\nduration_s: 2\n", "bad.yaml: tests: expected a mapping"),
    ("tests:\n  json: {concurrency: [16]}\n", "bad.yaml: duration_s: required key missing"),
    (GOOD + "duration: 3\n", "bad.yaml: duration: unknown key; expected one of name, description, duration_s"),
    (GOOD.replace("duration_s: 2", "duration_s: 2.5"), "bad.yaml: duration_s: expected a positive integer, got 2.5"),
    (GOOD.replace("duration_s: 2", "duration_s: true"), "bad.yaml: duration_s: expected a positive integer, got True"),
    (GOOD + "pause_s: -1\n", "bad.yaml: pause_s: expected a number >= 0, got -1"),
    (GOOD + "timeout_s: 0\n", "bad.yaml: timeout_s: expected a positive integer, got 0"),
    (GOOD + "timeout_s: 0.0001\n", "bad.yaml: timeout_s: expected a positive integer, got 0.0001"),
    (GOOD + "name: a/../../../../tmp/x\n", "bad.yaml: name: expected letters, digits"),
    (GOOD + "name: 'a b'\n", "bad.yaml: name: expected letters, digits"),
    (GOOD + "name: 'x*?'\n", "bad.yaml: name: expected letters, digits"),
    (GOOD + "name: ..\n", "bad.yaml: name: expected letters, digits"),
    (GOOD + "repeats: 1\nrepeats: 2\n", "bad.yaml: YAML syntax error at line 5, column 1: duplicate key 'repeats'"),
    (GOOD + "open_loop: {tests: [json], rates: [0.001]}\n", "bad.yaml: open_loop.rates: expected a positive integer"),
    (GOOD + "repeats: two\n", "bad.yaml: repeats: expected a positive integer, got 'two'"),
    (GOOD + "warmup: maybe\n", "bad.yaml: warmup: expected true, false or a whole number of seconds, got 'maybe'"),
    (GOOD + "primer: {connections: -8}\n", "bad.yaml: primer.connections: expected a positive integer, got -8"),
    (GOOD + "primer: {seconds: 5}\n", "bad.yaml: primer.seconds: unknown key"),
    (GOOD + "targets: [flask]\n", "bad.yaml: targets: unknown target or group 'flask'; groups: all, core,"),
    (GOOD + "targets: some\n", "bad.yaml: targets: unknown target or group 'some'; groups: all, core,"),
    (GOOD + "targets: [1]\n", "bad.yaml: targets: expected a group .all, core, servers, style, baselines. or a list"),
    (GOOD + "open_loop: {tests: [json]}\n", "bad.yaml: open_loop: give rates"),
    ("tests:\n  json: {concurrency: [16], targets: [flask]}\nduration_s: 2\n",
     "bad.yaml: tests.json.targets: unknown target or group 'flask'; groups: all, core,"),
    ("tests:\n  json: {concurrency: [16], workers: [1, 0]}\nduration_s: 2\n",
     "bad.yaml: tests.json.workers: expected a list of positive integers, got 0"),
    ("tests:\n  json: {concurrency: [16], python: [3.99.1]}\nduration_s: 2\n",
     "bad.yaml: tests.json.python: expected a list of Python versions like 3.13 or '3.14t', got '3.99.1'"),
    (GOOD + "open_loop: {tests: [db], fractions: [0.5]}\n", "bad.yaml: open_loop.tests: 'db' has fractions"),
    (GOOD + "open_loop: {tests: [xml], rates: [10]}\n", "bad.yaml: open_loop.tests: unknown test 'xml'"),
    (GOOD + "open_loop: {tests: [json], rates: [-5]}\n", "bad.yaml: open_loop.rates: expected a positive number"),
    (GOOD + "open_loop: {tests: [json], rates: [5], vus: 8, max_vus: 4}\n",
     "bad.yaml: open_loop.max_vus: expected at least vus \\(8\\), got 4"),
    ("- just\n- a list\n", r"bad.yaml: \(top level\): expected a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_malformed_scenarios_name_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(BenchlabError, match=message):
        load_scenario(_write(tmp_path, body))


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchlabError) as info:
        load_scenario(_write(tmp_path, "duration_s: 2\ntests: {json: [16\n"))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("bad.yaml: YAML syntax error at line")


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    s = load_scenario(_write(tmp_path, GOOD + "open_loop: {tests: [json], rates: [100]}\n"))
    assert s.name == "bad" and s.repeats == 1 and s.targets is None and s.warmup_duration_s == 0
    assert (s.primer.duration_s, s.primer.connections) == (5, 8)
    again = tmp_path / "again.yaml"
    again.write_text(s.to_yaml())
    assert load_scenario(str(again)) == s  # defaults are written out, so the copy is the same scenario
    steps = s.plan(TARGETS[:1])
    assert [(x.mode, x.rate, x.concurrency, x.max_vus, x.duration_s) for x in steps] == [
        ("closed", None, 16, None, 2.0),
        ("open", 100.0, 64, 256, 2.0),
    ]


def test_exponent_rates_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e3 as a string; the lab reads it as the number a user meant."""
    s = load_scenario(_write(tmp_path, GOOD + "open_loop: {tests: [json], rates: [1e3]}\n"))
    assert s.open_loop is not None and s.open_loop.rates == (1000.0,)


def test_a_test_sweeps_and_selects_on_its_own(tmp_path: Path) -> None:
    """A test's own ``workers`` and ``targets`` narrow that test; the others run once, on each
    target's default, and ``--workers`` style checks see every value any test sweeps."""
    s = load_scenario(_write(tmp_path, """\
        duration_s: 2
        repeats: 2
        tests:
          json: {concurrency: [16, 64], workers: [1, 2], targets: [fastapi-uvicorn, flask-gunicorn-gevent]}
          db: {concurrency: [16]}
        """))
    names = [t.name for t in TARGETS]
    steps = s.plan(TARGETS)
    assert Counter((x.test, x.setup.workers, x.target) for x in steps) == {
        **{("json", w, t): 4 for w in (1, 2) for t in ("fastapi-uvicorn", "flask-gunicorn-gevent")},
        **{("db", None, t): 2 for t in names},
    }
    assert [x.setup.workers for x in steps if x.repeat == 1] == [1] * 4 + [2] * 4 + [None] * 3  # one restart each
    assert s.swept("workers") == [1, 2] and s.swept("python") == []
    assert s.profiled_setups() == {"json": s.setups()[1], "db": s.setups()[2]}
    assert s.estimate_s(TARGETS) == pytest.approx(sum(x.duration_s for x in steps) + 14 * s.primer.duration_s)
    assert load_scenario(_write(tmp_path, s.to_yaml())) == s


def test_claims_measures_what_each_claim_needs_within_30_minutes() -> None:
    """Every check of a claim judged on its own workload finds its test, level and axis values
    planned for the baseline and each contender; load leaves 5 minutes for start-up."""
    from benchlab.config.claims import load_claims

    s = load_scenario("claims")
    targets = load_targets(s.target_names(), env={})
    planned = {(x.target, x.test, x.concurrency, x.queries, x.setup.workers) for x in s.plan(targets)}
    workload = [c for c in load_claims() if c.workload]  # the rest are judged on TechEmpower's tests
    assert len(workload) == 6
    for claim in workload:
        for target in (claim.baseline, *claim.contenders):
            for check in claim.checks:
                level = dict(check.level_items)
                for test in filter(None, (check.test, check.relative_to)):
                    found = {(w, c, q) for t, tst, c, q, w in planned if (t, tst) == (target, test)
                             and level.get("concurrency", c) == c and level.get("queries", q) == q}  # fmt: skip
                    assert found, (claim.id, target, test)
                    if check.across:
                        assert {w for w, _, _ in found} == {1, 2}, (claim.id, target)
    assert s.estimate_s(targets) <= 25 * 60


def test_upstream_model_measures_every_target_alone_and_at_256() -> None:
    """What scripts/upstream_expected.py needs: each target's upstream at 1 and 256 connections,
    20 ms waits (where the CPU is near its limit) and 200 ms (where it is far from it), twice,
    within 12 minutes of load."""
    s = load_scenario("upstream-model")
    targets = load_targets(s.target_names(), env={})
    steps = s.plan(targets)
    assert {t.name for t in targets} == {t.name for t in load_targets(["all"], env={})}
    assert Counter((x.target, x.test, x.concurrency, x.queries) for x in steps) == {
        (t.name, "upstream", c, ms): 2 for t in targets for c in (1, 256) for ms in (20, 200)
    }
    assert s.estimate_s(targets) <= 12 * 60
