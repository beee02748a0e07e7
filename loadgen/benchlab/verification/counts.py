"""TFB's query-count rule through pg_stat_statements: one burst per test, statement totals
before and after, compared with each test's ``QueryCount``.

Targets are counted one at a time, as pg_stat_statements counts the whole database.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

import psycopg

from benchlab.contract import TEST_TYPES, QueryCount, TestType
from benchlab.targets import Target
from benchlab.verification.burst import BURST, burst, request_bytes
from benchlab.verification.checks import Verification

NO_STATS = "pg_stat_statements not available, query counts not checked"
BURST_ROWS = 20  # TFB's queries=N for the queries and updates counts
BURST_TIMEOUT_FACTOR = 6  # a burst queues 512 requests: each may wait this many request timeouts
QUIET_INTERVAL_S = 0.2  # no statement counted for this long = nothing else running
QUIET_WAIT_S = 10.0
STATS_QUERY = (
    "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s "
    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
)
# The tables some test's count reads, in registry order; only statements on them are counted.
_TABLES = tuple(dict.fromkeys(t.query_count.table for t in TEST_TYPES.values() if t.query_count is not None))
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    *((f"{t}_update", re.compile(rf"\bupdate\s+\"?{t}\"?\b", re.IGNORECASE)) for t in _TABLES),
    *((f"{t}_select", re.compile(rf"\bfrom\s+\"?{t}\"?\b", re.IGNORECASE)) for t in _TABLES),
)


async def query_counts(run: Verification, targets: list[Target]) -> None:
    """TFB's rule: 512 concurrent requests per counted test, one statement per row read."""
    counted = [spec for spec in run.specs if spec.query_count is not None]
    if not counted or not targets or run.db is None:
        return
    if not await _stats_available(run.db):
        for target in targets:
            for spec in counted:
                run.check(target, spec.name).warn(NO_STATS)
        return
    for target in targets:
        for spec in counted:
            await _count_one(run, target, spec)


async def _stats_available(db: psycopg.AsyncConnection[Any]) -> bool:
    try:
        await db.execute(STATS_QUERY + " LIMIT 1")
    except psycopg.Error:
        return False
    return True


async def _count_one(run: Verification, target: Target, spec: TestType) -> None:
    assert run.db is not None and spec.query_count is not None
    check = run.check(target, spec.name)
    value = str(BURST_ROWS) if spec.param is not None else None
    path = spec.path_for(value)
    before = await _quiet_totals(run.db)
    outcomes = await burst(target.url, request_bytes(target.url, spec, value), run.timeout_s * BURST_TIMEOUT_FACTOR)
    after = await _statement_totals(run.db)
    ok = outcomes.pop("200", 0)
    if outcomes:
        summary = ", ".join(f"{n} x {what}" for what, n in outcomes.most_common(3))
        check.fail(f"{BURST} concurrent {path}: {outcomes.total()} not 200 ({summary}); counts not compared")
        return
    diff = {k: after[k] - before[k] for k in after}
    rows_per_response = BURST_ROWS if value is not None else 1
    for problem in count_problems(spec.query_count, rows_per_response, ok, diff):
        check.fail(f"{BURST} concurrent {path}: {problem}")


async def _quiet_totals(db: psycopg.AsyncConnection[Any]) -> Counter[str]:
    """Totals once nothing else is using the tables (say a worker still filling its cache after
    start-up): TFB verifies one framework alone, here every target shares the database."""
    totals = await _statement_totals(db)
    deadline = time.monotonic() + QUIET_WAIT_S
    while time.monotonic() < deadline:
        await asyncio.sleep(QUIET_INTERVAL_S)
        later = await _statement_totals(db)
        if later == totals:
            break
        totals = later
    return totals


async def _statement_totals(db: psycopg.AsyncConnection[Any]) -> Counter[str]:
    """Calls and rows, summed per kind of statement (an UPDATE before a SELECT), for this database."""
    cur = await db.execute(STATS_QUERY)
    totals: Counter[str] = Counter()
    for query, calls, rows in await cur.fetchall():
        kind = next((kind for kind, pattern in _KINDS if pattern.search(query)), None)
        if kind is not None:
            totals[f"{kind}_calls"] += calls
            totals[f"{kind}_rows"] += rows
    return totals


def count_problems(rule: QueryCount, rows_per_response: int, ok: int, diff: Counter[str] | dict[str, int]) -> list[str]:
    """Exact counts for reads; with ``writes_back`` also exact writes: one UPDATE per response or
    one per row, and every row read written once. Stricter than TFB, which forgives a bulk UPDATE
    5 % of its rows (and one UPDATE per row none): a row the app chose not to write is a defect
    whatever the statement. ``rows_per_response`` is what a one-SELECT-per-row rule expects."""

    def get(kind: str) -> int:
        return int(diff.get(f"{rule.table}_{kind}", 0))

    t, out = rule.table, []
    calls, rows = get("select_calls"), get("select_rows")
    if rule.rows_per_select is None:
        want = ok * rows_per_response
        if calls != want:
            out.append(f"{calls} {t} SELECTs for {ok} responses x {rows_per_response} rows, expected {want}")
        if rows != calls:
            out.append(f"{rows} {t} rows read by {calls} SELECTs: expected one row per SELECT")
    else:
        want = ok * rule.rows_per_select
        if calls != ok:
            out.append(f"{calls} {t} SELECTs for {ok} responses, expected {ok}")
        if rows != want:
            out.append(f"{rows} {t} rows read, expected {want}")
    if rule.writes_back:
        writes, written = get("update_calls"), get("update_rows")
        if writes not in (ok, want):
            out.append(f"{writes} {t} UPDATEs for {ok} responses, expected {ok} (bulk) or {want} (one per row)")
        if written != want:
            out.append(f"{written} {t} rows written, expected {want}: every row read, written once")
    return out
