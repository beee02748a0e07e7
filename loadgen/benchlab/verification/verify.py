"""The order of verification: probe, read-only tests, Date, tests that write, query counts.

Order matters for correctness, not just speed: read-only checks run for all targets at once;
tests that write (updates) then run one target at a time so no target's writes race another's
value checks; query counts run one target at a time too, as pg_stat_statements counts the
whole database.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from benchlab.contract import MAX_QUERIES, TEST_TYPES, TESTS, BodyProblem, Row, TestType
from benchlab.errors import BenchlabError
from benchlab.targets import Target
from benchlab.verification.checks import ContractCheck, Verification
from benchlab.verification.counts import query_counts
from benchlab.verification.database import check_changed, compare_stored, connect, world
from benchlab.verification.responses import fetch, send
from benchlab.verification.upstream import check_elapsed, check_waits, timeout_for

DATE_RECHECK_S = 3.0  # TFB's pause before fetching again to compare Date


def verify_targets(
    targets: list[Target],
    tests: list[str] | None = None,
    dsn: str | None = None,
    timeout_s: float = 10,
    upstream_url: str | None = None,
) -> list[ContractCheck]:
    """One ``ContractCheck`` per target x test, in registry x contract order. Never raises for a target.
    ``upstream_url``: where the upstream service is, to count the calls it sees."""
    selected = list(tests or TESTS)
    unknown = [t for t in selected if t not in TEST_TYPES]
    if unknown:
        raise BenchlabError(f"unknown test {unknown[0]!r}; known tests: {', '.join(TESTS)}")
    specs = [spec for name, spec in TEST_TYPES.items() if name in selected]
    return asyncio.run(_verify(targets, specs, dsn, timeout_s, upstream_url))


async def _verify(
    targets: list[Target], specs: list[TestType], dsn: str | None, timeout_s: float, upstream_url: str | None
) -> list[ContractCheck]:
    checks = {(t.name, spec.name): ContractCheck(t.name, spec.name) for t in targets for spec in specs}
    db, db_problem = await connect(dsn, timeout_s)
    run = Verification(specs, timeout_s, db, db_problem, checks)
    try:
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(
            timeout=timeout_s, limits=limits, headers={"Accept-Encoding": "identity"}
        ) as client:
            probes = await asyncio.gather(*(_probe(client, run, t) for t in targets))
            live = [(t, p) for t, p in zip(targets, probes, strict=True) if p is not None]
            reads = [spec for spec in specs if not spec.writes]
            await asyncio.gather(*(_check_tests(client, run, t, reads) for t, _ in live))
            await asyncio.gather(*(_date_check(client, run, t, p) for t, p in live))
            writes = [spec for spec in specs if spec.writes]
            for t, _ in live:
                await _check_tests(client, run, t, writes)
            await check_waits(client, run, [t for t, _ in live], upstream_url)
        await query_counts(run, [t for t, _ in live])
    finally:
        if db is not None:
            await db.close()
    return list(checks.values())


@dataclass
class _Probe:
    spec: TestType
    started: float
    date: str | None


async def _probe(client: httpx.AsyncClient, run: Verification, target: Target) -> _Probe | None:
    """First request and Date sample; an unreachable target fails every test at once, quickly."""
    spec = run.specs[0]
    started = time.monotonic()
    resp = await send(client, target.url, spec, None, run.timeout_s)
    if isinstance(resp, str):
        for s in run.specs:
            run.check(target, s.name).fail(f"unreachable: {resp}")
        return None
    return _Probe(spec, started, resp.headers.get("date"))


async def _date_check(client: httpx.AsyncClient, run: Verification, target: Target, probe: _Probe) -> None:
    """TFB refetches 3 s later and fails an identical Date: once per target here, applied to all."""
    if probe.date is None:
        return  # already reported as a missing header
    await asyncio.sleep(max(0.0, probe.started + DATE_RECHECK_S - time.monotonic()))
    resp = await send(client, target.url, probe.spec, None, run.timeout_s)
    later = resp.headers.get("date") if isinstance(resp, httpx.Response) else None
    if later == probe.date:
        for spec in run.specs:
            run.check(target, spec.name).fail(
                f"Date unchanged 3 s later on {probe.spec.path_for()} ({probe.date!r}; checked once per target)"
            )


async def _check_tests(client: httpx.AsyncClient, run: Verification, target: Target, specs: list[TestType]) -> None:
    for spec in specs:
        await _check_test(client, run, target, spec)


async def _check_test(client: httpx.AsyncClient, run: Verification, target: Target, spec: TestType) -> None:
    """Every case of one test: the checks every response gets, the test's own body check, then
    (with a DSN) its rows against the database as ``spec.stored`` says."""
    check = run.check(target, spec.name)
    if spec.uses_db and run.db_problem:
        check.warn(run.db_problem)
    cached: list[Row] = []
    for value, expected in spec.cases():
        path = spec.path_for(value)
        before = await world(run.db) if run.db is not None and spec.writes and expected == MAX_QUERIES else None
        resp = await fetch(client, target.url, spec, check, value, timeout_for(run, spec, expected))
        if resp is None:
            continue
        if spec.waits:
            check_elapsed(check, path, resp, expected)
        try:
            rows = spec.check_body(resp.content, expected)
        except BodyProblem as exc:
            check.fail(f"{path}: {exc}")
            continue
        if not rows or run.db is None or spec.stored is None:
            continue
        if spec.stored == "cached":
            cached += rows  # compared once over all cases, below
            continue
        await compare_stored(run.db, check, path, rows, strict=True, any_of_duplicates=spec.writes)
        if before is not None:
            await check_changed(run.db, check, path, before)
    if cached and run.db is not None:
        await compare_stored(run.db, check, f"{spec.path} (all cases)", cached, strict=False)
