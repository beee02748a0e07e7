"""benchlab's own tests (upstream, routes) as data: labelled as benchlab's wherever they are
named, their parameters read and validated by the same rules as TechEmpower's. Fast: no lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchlab import contract
from benchlab.config.scenario import load_scenario
from benchlab.errors import BenchlabError
from benchlab.verification import ContractCheck, format_checks

OWN = "benchlab's own, not TechEmpower's"


def test_own_tests_are_labelled_and_tfb_tests_are_not() -> None:
    assert contract.TFB_TESTS == ("json", "plaintext", "db", "queries", "fortunes", "updates", "cached-queries")
    for name in ("upstream", "routes"):
        assert contract.TEST_TYPES[name].origin == "benchlab"
        assert OWN in contract.test_label(name)
    assert all(contract.test_label(name) == name for name in contract.TFB_TESTS)
    table = format_checks([ContractCheck("t", "upstream"), ContractCheck("t", "json")])
    assert OWN in table.splitlines()[0] and OWN not in table.splitlines()[1]


@pytest.mark.parametrize(
    ("raw", "wait"), [("", 20), ("foo", 20), ("0", 0), ("-5", 0), ("50", 50), ("10001", 10_000)]
)
def test_upstream_cases_follow_tfbs_lenient_rule(raw: str, wait: int) -> None:
    assert (raw, wait) in contract.WAIT_CASES
    assert contract.TEST_TYPES["upstream"].path_for(raw) == f"/upstream?ms={raw}"


def test_upstream_body_check() -> None:
    check = contract.TEST_TYPES["upstream"].check_body
    assert check(b'{"upstream":"benchlab","ms":20}', 20) == []
    with pytest.raises(contract.BodyProblem, match="expected"):
        check(b'{"upstream":"benchlab","ms":0}', 20)
    with pytest.raises(contract.BodyProblem, match="not JSON"):
        check(b"nope", 20)


def test_routes_body_check() -> None:
    spec = contract.TEST_TYPES["routes"]
    assert spec.path_for() == "/r999/4242"
    assert spec.check_body(b'{"route": 999, "id": 4242}', 1) == []
    with pytest.raises(contract.BodyProblem):
        spec.check_body(b'{"route": 998, "id": 4242}', 1)


def _scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text("duration_s: 2\ntests:\n" + body)
    return path


def test_scenarios_take_upstream_waits_up_to_10000_ms(tmp_path: Path) -> None:
    s = load_scenario(str(_scenario(tmp_path, "  upstream: {concurrency: [64], queries: [20, 10000]}\n")))
    assert [step.url_path() for step in s.plan([])] == []
    assert s.tests["upstream"].queries == (20, 10_000)
    with pytest.raises(BenchlabError, match="up to 10000"):
        load_scenario(str(_scenario(tmp_path, "  upstream: {concurrency: [64], queries: [10001]}\n")))
    with pytest.raises(BenchlabError, match="up to 500"):
        load_scenario(str(_scenario(tmp_path, "  queries: {concurrency: [64], queries: [501]}\n")))
