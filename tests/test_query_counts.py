"""TechEmpower's query-count rule, checked through pg_stat_statements for every target.

As TFB does: 512 concurrent requests once per URL, statement counts before and after. Every row
read is its own SELECT returning one row (no ``IN (...)``, no batching); updates also write
every row back. Counted here independently of the verifier.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from benchlab import contract
from benchlab.harness import NativeLab, repo_root, target_kit_dir
from benchlab.targets import Target
from benchlab.venvs import service_python
from benchlab.verification.counts import count_problems

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
    """Every row read is written, exactly once: no margin, stricter than TFB's 5 % for a bulk
    UPDATE (and as strict as its rule for one UPDATE per row)."""
    diff = counted_burst(stats_lab, target, f"/updates?queries={ROWS}")
    want = CONCURRENCY * ROWS
    assert (diff["world select calls"], diff["world select rows"]) == (want, want)
    assert diff["world update calls"] in (CONCURRENCY, want)  # one bulk UPDATE per request, or one per row
    assert diff["world update rows"] == want


# The apps whose /updates draws each new number with randint(1, 10000), as (service folder,
# module, whether the numbers go to the ids in sorted order rather than in the order drawn).
# fastapi's db.py (fastapi-uvicorn and its kin) never draws the stored number, by design.
SEEDED_APPS = [("flask", "idiomatic", False), ("fastapi", "idiomatic", False), ("flask", "app", True)]
SEED = 22


@pytest.mark.parametrize(("service", "module", "sorted_ids"), SEEDED_APPS, ids=[f"{s}-{m}" for s, m, _ in SEEDED_APPS])
def test_updates_write_rows_whose_new_number_is_the_stored_one(
    stats_lab: NativeLab, tmp_path: Path, service: str, module: str, sorted_ids: bool
) -> None:
    """The case a burst meets once in 10,000 rows, made certain: the table already holds the very
    numbers the app will draw (its ``random`` seeded, in its own process and environment), and
    every row must still be written. An ORM's unit of work skips such rows."""
    rng = random.Random(SEED)
    ids = rng.sample(range(1, contract.WORLD_ROWS + 1), ROWS)
    numbers = [rng.randint(1, contract.WORLD_ROWS) for _ in ids]
    expected = sorted(zip(sorted(ids) if sorted_ids else ids, numbers, strict=True))
    with psycopg.connect(stats_lab.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE world SET randomnumber = v.r FROM unnest(%s::int[], %s::int[]) AS v(id, r) WHERE world.id = v.id",
            ([i for i, _ in expected], [n for _, n in expected]),
        )
    service_dir = repo_root() / "services" / service
    env = dict(os.environ, DATABASE_URL=stats_lab.dsn, BENCHLAB_WORKERS="1", PYTHONPATH=str(target_kit_dir(tmp_path)))
    before = quiet_totals(stats_lab.dsn)
    proc = subprocess.run(
        [service_python(service_dir), str(Path(__file__).with_name("seeded_update.py")), module,
         f"/updates?queries={ROWS}", str(SEED)],
        cwd=service_dir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    after = statement_totals(stats_lab.dsn)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status, body = proc.stdout.split("\n", 1)
    assert status == "200", body
    returned = sorted((row["id"], row["randomNumber"]) for row in json.loads(body))
    assert returned == expected, "the seeded app drew other numbers than the test stored: the case is not tested"
    assert after["world update rows"] - before["world update rows"] == ROWS


@pytest.mark.parametrize(
    ("calls", "rows", "fails"),
    [
        (CONCURRENCY * ROWS, CONCURRENCY * ROWS, False),  # one UPDATE per row, every row
        (CONCURRENCY, CONCURRENCY * ROWS, False),  # one bulk UPDATE per request, every row
        (CONCURRENCY * ROWS - 1, CONCURRENCY * ROWS - 1, True),  # a unit of work skipped an unchanged row
        (CONCURRENCY, CONCURRENCY * ROWS - 1, True),  # TFB forgives a bulk UPDATE 5 %; we do not
        (CONCURRENCY - 1, CONCURRENCY * ROWS, True),  # a request that wrote nothing
        (CONCURRENCY * ROWS, CONCURRENCY * ROWS + 1, True),  # a row written twice
    ],
)
def test_verifier_counts_rows_written_exactly(calls: int, rows: int, fails: bool) -> None:
    """The verifier's rule on the statement totals of a 512 x 20 burst (no lab needed)."""
    want = CONCURRENCY * ROWS
    diff = {"world_select_calls": want, "world_select_rows": want}
    diff.update(world_update_calls=calls, world_update_rows=rows)
    rule = contract.TEST_TYPES["updates"].query_count
    assert rule is not None
    problems = count_problems(rule, ROWS, CONCURRENCY, diff)
    assert bool(problems) is fails, problems
