"""TechEmpower's query-count rule, checked through pg_stat_statements for every target.

As TFB does: 512 concurrent requests once per URL, statement counts before and after. Every row
read is its own SELECT returning one row (no ``IN (...)``, no batching); updates also write
every row back. Counted here independently of the verifier.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from urllib.parse import urlsplit

import psycopg
import pytest

from benchlab import contract
from benchlab.harness import NativeLab
from benchlab.targets import Target

CONCURRENCY = 512
ROWS = 20
KINDS = {
    "world select": re.compile(r"^\s*select\b.*\bfrom\s+world\b", re.IGNORECASE | re.DOTALL),
    "world update": re.compile(r"\bupdate\s+world\b", re.IGNORECASE),
    "fortune select": re.compile(r"^\s*select\b.*\bfrom\s+fortune\b", re.IGNORECASE | re.DOTALL),
}


def statement_totals(dsn: str) -> Counter[str]:
    """Calls and rows per kind of statement on the benchmark tables (filtered here, not in SQL,
    so this query's own text is never counted)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        stats = conn.execute(
            "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
        ).fetchall()
    totals: Counter[str] = Counter()
    for query, calls, rows in stats:
        for kind, pattern in KINDS.items():
            if pattern.search(query):
                totals[f"{kind} calls"] += calls
                totals[f"{kind} rows"] += rows
    return totals


async def _one(host: str, port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        status = int((await reader.readline()).split()[1])
        await reader.read()
    finally:
        writer.close()
    return status


async def _burst(url: str, path: str) -> Counter[int]:
    u = urlsplit(url)
    request = f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode()
    async with asyncio.timeout(120):
        return Counter(await asyncio.gather(*(_one(u.hostname, u.port, request) for _ in range(CONCURRENCY))))


def quiet_totals(dsn: str) -> Counter[str]:
    """Totals once no one else is using the tables: right after the lab starts, a FastAPI worker
    may still be filling its world cache (all targets share one database)."""
    totals = statement_totals(dsn)
    for _ in range(50):
        time.sleep(0.2)
        later = statement_totals(dsn)
        if later == totals:
            break
        totals = later
    return totals


def counted_burst(lab: NativeLab, target: Target, path: str) -> Counter[str]:
    """Fires the burst; asserts every request got 200; returns the change in statement totals."""
    before = quiet_totals(lab.dsn)
    statuses = asyncio.run(_burst(target.url, path))
    after = statement_totals(lab.dsn)
    assert statuses == {200: CONCURRENCY}, f"{path}: statuses {dict(statuses)}"
    diff = Counter({k: after[k] - before[k] for k in after})
    return diff


@pytest.fixture
def stats_lab(lab: NativeLab) -> NativeLab:
    assert lab.postgres is not None
    if not lab.postgres.has_stat_statements:
        pytest.skip("this PostgreSQL build has no pg_stat_statements")
    return lab


def test_db_reads_one_row_per_request(stats_lab: NativeLab, target: Target) -> None:
    diff = counted_burst(stats_lab, target, contract.TEST_TYPES["db"].path_for())
    assert (diff["world select calls"], diff["world select rows"]) == (CONCURRENCY, CONCURRENCY)
    assert diff["world update calls"] == 0


def test_queries_one_select_per_row(stats_lab: NativeLab, target: Target) -> None:
    diff = counted_burst(stats_lab, target, f"/queries?queries={ROWS}")
    want = CONCURRENCY * ROWS
    assert (diff["world select calls"], diff["world select rows"]) == (want, want)
    assert diff["world update calls"] == 0


def test_fortunes_one_select_per_request(stats_lab: NativeLab, target: Target) -> None:
    diff = counted_burst(stats_lab, target, contract.TEST_TYPES["fortunes"].path_for())
    assert diff["fortune select calls"] == CONCURRENCY
    assert diff["fortune select rows"] == CONCURRENCY * len(contract.FORTUNES)


def test_updates_read_each_row_and_write_all_back(stats_lab: NativeLab, target: Target) -> None:
    diff = counted_burst(stats_lab, target, f"/updates?queries={ROWS}")
    want = CONCURRENCY * ROWS
    assert (diff["world select calls"], diff["world select rows"]) == (want, want)
    assert diff["world update calls"] >= CONCURRENCY  # at least one UPDATE per request (bulk allowed)
    assert diff["world update rows"] >= 0.95 * want  # TFB's margin when updates are bulk
