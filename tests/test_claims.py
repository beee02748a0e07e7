"""Claims: the schema (bad files name file and key) and verdicts on runs derived from a real run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from derived_runs import LATENCY, copy_run, rewrite_rows, scaled, successful, with_repeats

from benchlab.analysis.claims import FAILS, HOLDS, INCONCLUSIVE, evaluate_claims, unmeasured
from benchlab.analysis.run import load_run
from benchlab.config.claims import load_claims
from benchlab.errors import BenchlabError
from benchlab.model.codec import read_rows
from benchlab.targets import load_targets

KNOWN = [t.name for t in load_targets(env={})]


def head(baseline: str = KNOWN[0], contender: str = KNOWN[1]) -> str:
    return (
        f"claims:\n  - id: c\n    text: a claim\n    baseline: {baseline}\n    contenders: [{contender}]\n    checks:\n"
    )


HEAD = head()


def claims_file(tmp_path: Path, checks: str, baseline: str = KNOWN[0], contender: str = KNOWN[1]) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(head(baseline, contender) + checks)
    return path


def test_packaged_claims() -> None:
    claims = {c.id: c for c in load_claims()}
    assert {"fastapi-outperforms-flask", "fastapi-5x-throughput-quarter-latency"} <= set(claims)
    for name in ("fastapi-outperforms-flask", "fastapi-5x-throughput-quarter-latency"):
        assert claims[name].baseline == "flask-gunicorn-gevent"
        assert set(claims[name].contenders) == {"fastapi-uvicorn", "fastapi-hypercorn"}
    # The matrix's claims, each on the pair of targets that isolates it.
    pairs = {c.id: (c.baseline, c.contenders) for c in claims.values()}
    assert pairs["asgi-faster-than-wsgi-bare"] == ("wsgi-gunicorn-gevent", ("asgi-uvicorn",))
    idiomatic = ("flask-gunicorn-gevent-idiomatic", ("fastapi-uvicorn-idiomatic",))
    assert pairs["asgi-faster-than-wsgi-idiomatic"] == idiomatic
    assert pairs["fastapi-better-at-io-than-flask-gthread"] == ("flask-gunicorn-gthread", ("fastapi-uvicorn",))
    assert pairs["pydantic-and-docs-cost-little"] == ("fastapi-uvicorn", ("fastapi-uvicorn-idiomatic",))
    assert {c.test for c in claims["fastapi-better-at-io-than-flask-gthread"].checks} == {"db", "queries"}
    five_x = claims["fastapi-5x-throughput-quarter-latency"]
    assert {c.metric for c in five_x.checks} == {"rps", "latency_mean_ms"}


BAD = [
    ("claims: [unclosed", r"YAML syntax error at line"),
    ("claims: []\nclaims: []\n", r"duplicate key 'claims'"),
    ("{}", r"claims: expected a top-level 'claims:' list"),
    (HEAD + "      - {test: jsn, ratio: {above: 1}}\n", r"claims\[0\] \(c\)\.checks\[0\]\.test: unknown test 'jsn'"),
    (HEAD + "      - {test: json, metric: speed, ratio: {above: 1}}\n", r"checks\[0\]\.metric: unknown metric"),
    (HEAD + "      - {test: json, ratio: {above: 1, below: 2}}\n", r"checks\[0\]\.ratio: give exactly one"),
    (HEAD + "      - {test: json, ratio: {between: [6, 4]}}\n", r"ratio\.between: low 6 must be below high 4"),
    (HEAD + "      - {test: json, ratio: {above: -1}}\n", r"ratio\.above: expected a positive number"),
    (HEAD + "      - {test: json, tset: db, ratio: {above: 1}}\n", r"checks\[0\]\.tset: unknown key"),
    (HEAD + "      - {test: json, at: peak, level: {concurrency: 32}, ratio: {above: 1}}\n", r"either 'at' or 'level'"),
    (HEAD + "      - {test: json, level: {conc: 32}, ratio: {above: 1}}\n", r"checks\[0\]\.level\.conc: unknown key"),
    (HEAD + "      - {test: json, at: everywhere, ratio: {above: 1}}\n", r"checks\[0\]\.at: expected one of peak, all"),
    (HEAD + "      - {test: json, mode: half-open, ratio: {above: 1}}\n", r"checks\[0\]\.mode: expected one of"),
    (HEAD + "      - {test: json}\n", r"checks\[0\]\.ratio: required key missing"),
    (HEAD + "      []\n", r"\.checks: expected a non-empty list"),
    ("claims:\n  - {id: c, baseline: x}\n", r"claims\[0\]\.text: required key missing"),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_bad_claims_files_name_file_and_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BenchlabError, match=problem) as err:
        load_claims(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_bad_targets_and_ids(tmp_path: Path) -> None:
    check = "      - {test: json, ratio: {above: 1}}\n"
    with pytest.raises(BenchlabError, match=r"\.baseline: unknown target 'django'"):
        load_claims(claims_file(tmp_path, check, baseline="django"))
    with pytest.raises(BenchlabError, match="is also the baseline"):
        load_claims(claims_file(tmp_path, check, contender=KNOWN[0]))
    path = claims_file(tmp_path, check)
    path.write_text(path.read_text() + path.read_text().removeprefix("claims:\n"))
    with pytest.raises(BenchlabError, match="id 'c' is used twice"):
        load_claims(path)
    with pytest.raises(BenchlabError, match=r"missing\.yaml: cannot read"):
        load_claims(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- verdicts


def pair_of(run: Path) -> tuple[str, str]:
    """Two targets that both measured json in the run (baseline, contender)."""
    names = sorted({r["target"] for r in read_rows(run) if successful(r) and r["test"] == "json"}, key=KNOWN.index)
    assert len(names) >= 2, "the smoke run needs at least two targets"
    return names[0], names[1]


def make_contender(run: Path, baseline: str, contender: str, rps: float, latency: float = 1.0) -> None:
    """Every contender step the baseline also ran becomes the baseline's step times known factors."""
    steps = ("test", "mode", "concurrency", "pipeline", "queries", "offered_rps", "repeat")
    base = {tuple(r[k] for k in steps): r for r in read_rows(run) if r["target"] == baseline}

    def change(row: dict[str, str]) -> list[dict[str, str]]:
        b = base.get(tuple(row[k] for k in steps))
        if row["target"] != contender or b is None:  # open-loop rates differ per target
            return [row]
        copied = {**row, **{c: b[c] for c in ("rps", "requests", "verification", *LATENCY)}}
        return [scaled(copied, rps=rps, latency=latency)]

    rewrite_rows(run, change)


@pytest.fixture
def derived(smoke_run: Path, tmp_path: Path) -> tuple[Path, str, str]:
    run = copy_run(smoke_run, tmp_path / "run")
    with_repeats(run, 3)
    return (run, *pair_of(run))


@pytest.mark.parametrize(
    ("factor", "ratio", "verdict"),
    [
        (2.0, "{above: 1}", HOLDS),
        (0.5, "{above: 1}", FAILS),
        (1.0, "{above: 1}", INCONCLUSIVE),
        (5.0, "{between: [4, 6.25]}", HOLDS),
        (3.0, "{between: [4, 6.25]}", FAILS),
        (0.5, "{below: 0.75}", HOLDS),
    ],
)
def test_rps_verdicts(derived: tuple[Path, str, str], tmp_path: Path, factor: float, ratio: str, verdict: str) -> None:
    run, baseline, contender = derived
    make_contender(run, baseline, contender, rps=factor)
    claims = load_claims(claims_file(tmp_path, f"      - {{test: json, ratio: {ratio}}}\n", baseline, contender))
    (result,) = evaluate_claims(load_run(run), claims)
    (check,) = result.results
    assert check.estimate is not None and check.estimate.ratio == pytest.approx(factor, rel=1e-6)
    assert check.estimate.has_interval and check.estimate.n == "3 vs 3"
    assert check.verdict == verdict and result.verdict == verdict


def test_latency_levels_and_combined_verdicts(derived: tuple[Path, str, str], tmp_path: Path) -> None:
    """The 5x-at-a-quarter-latency kind of claim: rps at peak, latency over levels, one named level."""
    run, baseline, contender = derived
    make_contender(run, baseline, contender, rps=5.0, latency=0.25)
    level = next(r["concurrency"] for r in read_rows(run) if r["target"] == baseline and r["test"] == "json")
    checks = (
        "      - {test: json, metric: rps, at: peak, ratio: {between: [4, 6.25]}}\n"
        "      - {test: json, metric: latency_mean_ms, at: all, ratio: {between: [0.2, 0.3125]}}\n"
        f"      - {{test: json, metric: latency_p50_ms, level: {{concurrency: {level}}}, ratio: {{below: 0.5}}}}\n"
    )
    (result,) = evaluate_claims(load_run(run), load_claims(claims_file(tmp_path, checks, baseline, contender)))
    assert [c.verdict for c in result.results] == [HOLDS, HOLDS, HOLDS] and result.verdict == HOLDS
    assert result.results[1].estimate and result.results[1].estimate.method == "paired-log"
    # One failing check makes the claim fail; an unmeasurable one makes it inconclusive.
    failing = checks + "      - {test: json, ratio: {above: 10}}\n"
    (result,) = evaluate_claims(load_run(run), load_claims(claims_file(tmp_path, failing, baseline, contender)))
    assert result.verdict == FAILS
    missing = checks + "      - {test: json, level: {concurrency: 99999}, ratio: {above: 1}}\n"
    (result,) = evaluate_claims(load_run(run), load_claims(claims_file(tmp_path, missing, baseline, contender)))
    assert result.verdict == INCONCLUSIVE and "no successful step at concurrency=99999" in result.results[-1].note


def test_flagged_steps_are_named_in_the_verdict(derived: tuple[Path, str, str], tmp_path: Path) -> None:
    run, baseline, contender = derived
    make_contender(run, baseline, contender, rps=2.0)
    rewrite_rows(run, lambda r: [{**r, "client_bound": "true"} if r["target"] == contender else r])
    check = "      - {test: json, ratio: {above: 1}}\n"
    (result,) = evaluate_claims(load_run(run), load_claims(claims_file(tmp_path, check, baseline, contender)))
    assert any(f.startswith(contender) and "client-bound" in f for f in result.results[0].flags)


def test_real_run_with_packaged_claims(smoke_run: Path) -> None:
    """On the real smoke run: every pairing judged; with one repeat nothing can be claimed to hold."""
    run = load_run(smoke_run)
    claims = load_claims()
    results = evaluate_claims(run, claims)
    measured = set(run.targets)
    assert len(results) == sum(1 for c in claims for x in c.contenders if {c.baseline, x} <= measured)
    # Claims on targets the (core) smoke run lacks are listed with what they need, not judged.
    lacking = {c.id: need for c, need in unmeasured(run, claims)}
    assert lacking["pydantic-and-docs-cost-little"] == ["fastapi-uvicorn-idiomatic"]
    assert all(need and not set(need) <= measured for need in lacking.values())
    assert {r.verdict for r in results} <= {HOLDS, FAILS, INCONCLUSIVE}
    if max(s.repeat for s in run.steps) == 1:
        for r in results:
            assert r.verdict == INCONCLUSIVE
            # or, for a check across an axis, that the run did not sweep it
            assert all(re.search(r"too few samples|no successful|value\(s\), not 2 or more", c.note) for c in r.results)
