"""The verifier's view of the database: returned rows against the stored ones, and the world
table before and after updates. Without a usable DSN these checks are skipped (with a warning)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import psycopg

from benchlab.contract import MAX_QUERIES, Row
from benchlab.verification.checks import ContractCheck
from benchlab.verification.responses import first_line

NO_DSN = "no DSN, values and query counts not checked"
UPDATED_SHARE_MIN = 0.9  # TFB: fewer than 90 % of 500 rows changed fails


async def connect(dsn: str | None, timeout_s: float) -> tuple[psycopg.AsyncConnection[Any] | None, str | None]:
    """The verifier's own connection; a missing or unusable DSN only downgrades value checks to warn."""
    if not dsn:
        return None, NO_DSN
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s)))
    except psycopg.Error as exc:
        return None, f"database unreachable ({first_line(exc)}), values and query counts not checked"
    return conn, None


async def world(db: psycopg.AsyncConnection[Any]) -> dict[int, int]:
    """The whole world table, id to randomnumber: TFB's snapshot around ``updates?queries=501``."""
    cur = await db.execute("SELECT id, randomnumber FROM world")
    return dict(await cur.fetchall())


async def check_changed(
    db: psycopg.AsyncConnection[Any], check: ContractCheck, path: str, before: dict[int, int]
) -> None:
    """Most of the rows a 500-row update wrote must have stayed written."""
    after = await world(db)
    changed = sum(1 for i, v in after.items() if before.get(i) != v)
    needed = UPDATED_SHARE_MIN * MAX_QUERIES
    if changed < needed:
        check.fail(f"{path}: {changed} world rows changed, expected at least {needed:.0f} of 500")


async def compare_stored(
    db: psycopg.AsyncConnection[Any],
    check: ContractCheck,
    path: str,
    rows: list[Row],
    *,
    strict: bool,
    any_of_duplicates: bool = False,
) -> None:
    """Each row's randomNumber must be the value stored for its id (updates: any returned for an id)."""
    returned: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        returned[row["id"]].add(row["randomNumber"])
    cur = await db.execute("SELECT id, randomnumber FROM world WHERE id = ANY(%s)", (list(returned),))
    stored = dict(await cur.fetchall())

    def differs(row: Row) -> bool:
        value = stored.get(row["id"])
        return value not in returned[row["id"]] if any_of_duplicates else row["randomNumber"] != value

    wrong = [(row["id"], row["randomNumber"], stored.get(row["id"])) for row in rows if differs(row)]
    if not wrong:
        return
    i, got, want = wrong[0]
    reason = f"{path}: {len(wrong)} of {len(rows)} rows differ from the database"
    reason += f" (e.g. id {i}: got {got}, stored {want})"
    if strict:
        check.fail(reason)
    else:
        check.warn(reason + ": a stale cache? (allowed when updates ran after it was filled)")
