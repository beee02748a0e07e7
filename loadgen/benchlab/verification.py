"""Checks every target x test against the TechEmpower contract (``shared/tfb-contract.md``).

The lab goes further than TFB's verifier: with a DSN, returned rows must equal the stored rows
and query counts must match exactly, and failures TFB only warns about (bad parameter handling,
extra JSON keys) fail here. Two deliberate shortcuts keep ``verify`` fast: TFB re-fetches every
URL 3 s later to prove ``Date`` is not cached; here that is done once per target (on its first
test's URL) and the verdict applies to all of its tests. Query counts use one 512-request burst
per URL, as TFB does.

Order matters for correctness, not just speed: read-only checks run for all targets at once;
updates then run one target at a time so no target's writes race another's value checks; query
counts run one target at a time too, as pg_stat_statements counts the whole database.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import psycopg

from benchlab import contract
from benchlab.errors import BenchlabError
from benchlab.targets import Target

Status = Literal["pass", "warn", "fail"]

DATE_RECHECK_S = 3.0  # TFB's pause before fetching again to compare Date
BURST = 512  # TFB's concurrency for query counting
BURST_ROWS = 20  # TFB's queries=N for the queries and updates counts
BURST_TIMEOUT_FACTOR = 6  # a burst queues 512 requests: each may wait this many request timeouts
UPDATED_SHARE_MIN = 0.9  # TFB: fewer than 90 % of 500 rows changed fails
BULK_ROWS_MARGIN = 0.05  # TFB's margin on rows written when a bulk UPDATE is used
MAX_REASONS = 6
QUIET_INTERVAL_S = 0.2  # no statement counted for this long = nothing else running
QUIET_WAIT_S = 10.0
NO_DSN = "no DSN, values and query counts not checked"
NO_STATS = "pg_stat_statements not available, query counts not checked"
DB_TESTS = frozenset({"db", "queries", "fortunes", "updates", "cached-queries"})
COUNTED_TESTS = ("db", "queries", "fortunes", "updates")
ROW_KEYS = frozenset({"id", "randomNumber"})
# Which statements read or write which table; only these are counted.
WORLD_UPDATE = re.compile(r"\bupdate\s+\"?world\"?\b", re.IGNORECASE)
WORLD_SELECT = re.compile(r"\bfrom\s+\"?world\"?\b", re.IGNORECASE)
FORTUNE_SELECT = re.compile(r"\bfrom\s+\"?fortune\"?\b", re.IGNORECASE)
STATS_QUERY = (
    "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s "
    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
)


@dataclass
class Check:
    """The verdict for one target x test; ``reasons`` say what was expected and what came back."""

    target: str
    test: str
    status: Status = "pass"
    reasons: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.status = "fail"
        self._add(reason)

    def warn(self, reason: str) -> None:
        if self.status == "pass":
            self.status = "warn"
        self._add(reason)

    def _add(self, reason: str) -> None:
        reason = _trim(reason, 200)
        if reason in self.reasons:
            return
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)
        elif len(self.reasons) == MAX_REASONS:
            self.reasons.append("(more problems not shown)")


def verify_targets(
    targets: list[Target],
    tests: list[str] | None = None,
    dsn: str | None = None,
    timeout_s: float = 10,
) -> list[Check]:
    """One ``Check`` per target x test, in registry x contract order. Never raises for a target."""
    selected = list(tests or contract.TESTS)
    unknown = [t for t in selected if t not in contract.TESTS]
    if unknown:
        raise BenchlabError(f"unknown test {unknown[0]!r}; known tests: {', '.join(contract.TESTS)}")
    ordered = [t for t in contract.TESTS if t in selected]
    return asyncio.run(_verify(targets, ordered, dsn, timeout_s))


def format_checks(checks: Iterable[Check]) -> str:
    """One line per target x test: status, target, test, reasons."""
    checks = list(checks)
    if not checks:
        return "no checks"
    tw = max(len(c.target) for c in checks)
    sw = max(len(c.test) for c in checks)
    return "\n".join(
        f"{c.status.upper():<4}  {c.target:<{tw}}  {c.test:<{sw}}  {'; '.join(c.reasons)}".rstrip() for c in checks
    )


# --- orchestration ----------------------------------------------------------------------------


@dataclass
class _Run:
    """What every phase shares: the selected tests, the database handle and the verdicts."""

    tests: list[str]
    timeout_s: float
    db: psycopg.AsyncConnection[Any] | None
    db_problem: str | None
    checks: dict[tuple[str, str], Check]

    def check(self, target: Target, test: str) -> Check:
        return self.checks[(target.name, test)]


async def _verify(targets: list[Target], tests: list[str], dsn: str | None, timeout_s: float) -> list[Check]:
    checks = {(t.name, test): Check(t.name, test) for t in targets for test in tests}
    db, db_problem = await _connect(dsn, timeout_s)
    run = _Run(tests, timeout_s, db, db_problem, checks)
    try:
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(
            timeout=timeout_s, limits=limits, headers={"Accept-Encoding": "identity"}
        ) as client:
            probes = await asyncio.gather(*(_probe(client, run, t) for t in targets))
            live = [(t, p) for t, p in zip(targets, probes, strict=True) if p is not None]
            await asyncio.gather(*(_read_checks(client, run, t) for t, _ in live))
            await asyncio.gather(*(_date_check(client, run, t, p) for t, p in live))
            if "updates" in tests:
                for t, _ in live:
                    await _updates_check(client, run, t)
        await _query_counts(run, [t for t, _ in live])
    finally:
        if db is not None:
            await db.close()
    return list(checks.values())


async def _connect(dsn: str | None, timeout_s: float) -> tuple[psycopg.AsyncConnection[Any] | None, str | None]:
    """The verifier's own connection; a missing or unusable DSN only downgrades value checks to warn."""
    if not dsn:
        return None, NO_DSN
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s)))
    except psycopg.Error as exc:
        return None, f"database unreachable ({_first_line(exc)}), values and query counts not checked"
    return conn, None


@dataclass
class _Probe:
    path: str
    started: float
    date: str | None


async def _probe(client: httpx.AsyncClient, run: _Run, target: Target) -> _Probe | None:
    """First request and Date sample; an unreachable target fails every test at once, quickly."""
    path = contract.PATHS[run.tests[0]]
    started = time.monotonic()
    resp = await _get(client, target, path, run.timeout_s)
    if isinstance(resp, str):
        for test in run.tests:
            run.check(target, test).fail(f"unreachable: {resp}")
        return None
    return _Probe(path, started, resp.headers.get("date"))


async def _date_check(client: httpx.AsyncClient, run: _Run, target: Target, probe: _Probe) -> None:
    """TFB refetches 3 s later and fails an identical Date: once per target here, applied to all."""
    if probe.date is None:
        return  # already reported as a missing header
    await asyncio.sleep(max(0.0, probe.started + DATE_RECHECK_S - time.monotonic()))
    resp = await _get(client, target, probe.path, run.timeout_s)
    later = resp.headers.get("date") if isinstance(resp, httpx.Response) else None
    if later == probe.date:
        for test in run.tests:
            run.check(target, test).fail(
                f"Date unchanged 3 s later on {probe.path} ({probe.date!r}; checked once per target)"
            )


# --- read-only checks -------------------------------------------------------------------------


async def _read_checks(client: httpx.AsyncClient, run: _Run, target: Target) -> None:
    for test in run.tests:
        check = run.check(target, test)
        if test in DB_TESTS and run.db_problem and test != "updates":
            check.warn(run.db_problem)
        if test == "json":
            await _check_json(client, run, target, check)
        elif test == "plaintext":
            await _check_plaintext(client, run, target, check)
        elif test == "db":
            await _check_db(client, run, target, check)
        elif test in ("queries", "cached-queries"):
            await _check_rows_cases(client, run, target, check)
        elif test == "fortunes":
            await _check_fortunes(client, run, target, check)


async def _fetch(
    client: httpx.AsyncClient, run: _Run, target: Target, check: Check, path: str
) -> httpx.Response | None:
    """GET with the checks every response gets: status, headers. None when there is no body to check."""
    resp = await _get(client, target, path, run.timeout_s)
    if isinstance(resp, str):
        check.fail(resp)
        return None
    if resp.status_code != 200:
        check.fail(f"{path}: status {resp.status_code}, expected 200 ({_short(resp.text)})")
        return None
    for problem in _header_problems(resp, check.test):
        check.fail(f"{path}: {problem}")
    return resp


async def _check_json(client: httpx.AsyncClient, run: _Run, target: Target, check: Check) -> None:
    path = contract.PATHS["json"]
    resp = await _fetch(client, run, target, check, path)
    if resp is None:
        return
    body = _parse_json(resp, check, path)
    if body is not _INVALID and body != contract.JSON_BODY:
        check.fail(f"{path}: body {_short(body)}, expected {contract.JSON_BODY}")


async def _check_plaintext(client: httpx.AsyncClient, run: _Run, target: Target, check: Check) -> None:
    path = contract.PATHS["plaintext"]
    resp = await _fetch(client, run, target, check, path)
    if resp is not None and resp.content != contract.PLAINTEXT_BODY:
        check.fail(f"{path}: body {_short(resp.content)}, expected {contract.PLAINTEXT_BODY!r}")


async def _check_db(client: httpx.AsyncClient, run: _Run, target: Target, check: Check) -> None:
    path = contract.PATHS["db"]
    resp = await _fetch(client, run, target, check, path)
    if resp is None:
        return
    body = _parse_json(resp, check, path)
    if body is _INVALID:
        return
    problem = _row_problem(body)
    if problem:
        check.fail(f"{path}: {problem}")
    elif run.db is not None:
        await _compare_stored(run, check, path, [body], strict=True)


def _case_path(test: str, value: str) -> str:
    return f"{contract.PATHS[test]}?{contract.PARAM[test]}={value}"


async def _check_rows_cases(client: httpx.AsyncClient, run: _Run, target: Target, check: Check) -> None:
    """TFB's parameter cases for queries and cached-queries: row shape, count and (with a DSN) values.

    A cache filled before later updates legitimately holds old values, so for cached-queries a
    difference from the database only warns, once, over all cases together.
    """
    cached: list[dict[str, int]] = []
    for value, expected in contract.PARAM_CASES:
        path = _case_path(check.test, value)
        rows = await _fetch_rows(client, run, target, check, path, expected)
        if rows is None or run.db is None:
            continue
        if check.test == "queries":
            await _compare_stored(run, check, path, rows, strict=True)
        else:
            cached += rows
    if cached:
        await _compare_stored(run, check, f"{contract.PATHS[check.test]} (all cases)", cached, strict=False)


async def _fetch_rows(
    client: httpx.AsyncClient, run: _Run, target: Target, check: Check, path: str, expected: int
) -> list[dict[str, int]] | None:
    """The response's rows when they have the right shape and count, else None (failure recorded)."""
    resp = await _fetch(client, run, target, check, path)
    if resp is None:
        return None
    body = _parse_json(resp, check, path)
    if body is _INVALID:
        return None
    if not isinstance(body, list):
        check.fail(f"{path}: expected a JSON array of {expected} rows, got {_short(body)}")
        return None
    if len(body) != expected:
        check.fail(f"{path}: {len(body)} rows, expected {expected}")
        return None
    for row in body:
        problem = _row_problem(row)
        if problem:
            check.fail(f"{path}: {problem}")
            return None
    return body


async def _check_fortunes(client: httpx.AsyncClient, run: _Run, target: Target, check: Check) -> None:
    path = contract.PATHS["fortunes"]
    resp = await _fetch(client, run, target, check, path)
    if resp is None:
        return
    try:
        page = resp.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        check.fail(f"{path}: body is not UTF-8 ({exc.reason} at byte {exc.start})")
        return
    got, want = contract.normalise_html(page), contract.expected_fortunes_page()
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        lo = max(0, at - 30)
        check.fail(f"{path}: page differs at char {at}: got {got[lo : at + 50]!r}, expected {want[lo : at + 50]!r}")


# --- updates ----------------------------------------------------------------------------------


async def _updates_check(client: httpx.AsyncClient, run: _Run, target: Target) -> None:
    """Shape and count per parameter case; with a DSN, rows written as returned and 501 persisted."""
    check = run.check(target, "updates")
    if run.db is None:
        check.warn(run.db_problem or NO_DSN)
    for value, expected in contract.PARAM_CASES:
        path = _case_path("updates", value)
        before = await _world(run) if run.db is not None and expected == contract.MAX_QUERIES else None
        rows = await _fetch_rows(client, run, target, check, path, expected)
        if rows is None or run.db is None:
            continue
        await _compare_stored(run, check, path, rows, strict=True, any_of_duplicates=True)
        if before is not None:
            after = await _world(run)
            changed = sum(1 for i, v in after.items() if before.get(i) != v)
            needed = UPDATED_SHARE_MIN * contract.MAX_QUERIES
            if changed < needed:
                check.fail(f"{path}: {changed} world rows changed, expected at least {needed:.0f} of 500")


async def _world(run: _Run) -> dict[int, int]:
    assert run.db is not None
    cur = await run.db.execute("SELECT id, randomnumber FROM world")
    return dict(await cur.fetchall())


async def _compare_stored(
    run: _Run,
    check: Check,
    path: str,
    rows: list[dict[str, int]],
    *,
    strict: bool,
    any_of_duplicates: bool = False,
) -> None:
    """Each row's randomNumber must be the value stored for its id (updates: any returned for an id)."""
    assert run.db is not None
    returned: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        returned[row["id"]].add(row["randomNumber"])
    cur = await run.db.execute("SELECT id, randomnumber FROM world WHERE id = ANY(%s)", (list(returned),))
    stored = dict(await cur.fetchall())

    def differs(row: dict[str, int]) -> bool:
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


# --- query counts -----------------------------------------------------------------------------


async def _query_counts(run: _Run, targets: list[Target]) -> None:
    """TFB's rule through pg_stat_statements: 512 concurrent requests, one statement per row read."""
    counted = [t for t in COUNTED_TESTS if t in run.tests]
    if not counted or not targets or run.db is None:
        return
    if not await _stats_available(run.db):
        for target in targets:
            for test in counted:
                run.check(target, test).warn(NO_STATS)
        return
    for target in targets:
        for test in counted:
            await _count_one(run, target, test)


async def _stats_available(db: psycopg.AsyncConnection[Any]) -> bool:
    try:
        await db.execute(STATS_QUERY + " LIMIT 1")
    except psycopg.Error:
        return False
    return True


async def _count_one(run: _Run, target: Target, test: str) -> None:
    check = run.check(target, test)
    assert run.db is not None
    path = _case_path(test, str(BURST_ROWS)) if test in contract.PARAM else contract.PATHS[test]
    before = await _quiet_totals(run.db)
    outcomes = await _burst(target.url, path, run.timeout_s * BURST_TIMEOUT_FACTOR)
    after = await _statement_totals(run.db)
    ok = outcomes.pop("200", 0)
    if outcomes:
        summary = ", ".join(f"{n} x {what}" for what, n in outcomes.most_common(3))
        check.fail(f"{BURST} concurrent {path}: {outcomes.total()} not 200 ({summary}); counts not compared")
        return
    diff = {k: after[k] - before[k] for k in after}
    for problem in _count_problems(test, ok, diff):
        check.fail(f"{BURST} concurrent {path}: {problem}")


async def _burst(base_url: str, path: str, timeout_s: float) -> Counter[str]:
    """BURST concurrent GETs, one connection each; outcomes counted ("200", "status 503", errors).

    Plain asyncio streams rather than httpx: httpx's pool slows down sharply at hundreds of
    connections (512 GET /json took 14 s here, against 0.5 s this way).
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode()
    outcomes = await asyncio.gather(*(_raw_get(host, port, request, timeout_s) for _ in range(BURST)))
    return Counter(outcomes)


async def _raw_get(host: str, port: int, request: bytes, timeout_s: float) -> str:
    """One request on its own connection, read to the end; "200", "status N" or what went wrong."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
                await reader.read()  # to EOF: the server has finished the request
            finally:
                writer.close()
    except TimeoutError:
        return f"no response within {timeout_s:g} s"
    except OSError as exc:
        return type(exc).__name__
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return "malformed response"
    return "200" if parts[1] == b"200" else f"status {parts[1].decode()}"


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
    """Calls and rows, summed per kind of statement, for this database."""
    cur = await db.execute(STATS_QUERY)
    totals: Counter[str] = Counter()
    for query, calls, rows in await cur.fetchall():
        if WORLD_UPDATE.search(query):
            kind = "world_update"
        elif WORLD_SELECT.search(query):
            kind = "world_select"
        elif FORTUNE_SELECT.search(query):
            kind = "fortune_select"
        else:
            continue
        totals[f"{kind}_calls"] += calls
        totals[f"{kind}_rows"] += rows
    return totals


def _count_problems(test: str, ok: int, diff: Counter[str] | dict[str, int]) -> list[str]:
    """Exact counts for reads; for updates also an UPDATE per request and (bulk margin) every row written."""

    def get(key: str) -> int:
        return int(diff.get(key, 0))

    out = []
    if test == "fortunes":
        if get("fortune_select_calls") != ok:
            out.append(f"{get('fortune_select_calls')} fortune SELECTs for {ok} responses, expected {ok}")
        want_rows = ok * len(contract.FORTUNES)
        if get("fortune_select_rows") != want_rows:
            out.append(f"{get('fortune_select_rows')} fortune rows read, expected {want_rows}")
        return out
    per_request = 1 if test == "db" else BURST_ROWS
    want = ok * per_request
    calls, rows = get("world_select_calls"), get("world_select_rows")
    if calls != want:
        out.append(f"{calls} world SELECTs for {ok} responses x {per_request} rows, expected {want}")
    if rows != calls:
        out.append(f"{rows} world rows read by {calls} SELECTs: expected one row per SELECT")
    if test == "updates":
        writes, written = get("world_update_calls"), get("world_update_rows")
        if writes < ok:
            out.append(f"{writes} world UPDATEs for {ok} responses, expected at least one per request")
        if written < want * (1 - BULK_ROWS_MARGIN):
            out.append(f"{written} world rows written, expected about {want}")
    return out


# --- per-response helpers ---------------------------------------------------------------------


async def _get(client: httpx.AsyncClient, target: Target, path: str, timeout_s: float) -> httpx.Response | str:
    """The response, or a short reason why there is none."""
    try:
        return await client.get(target.url + path, timeout=timeout_s)
    except httpx.ConnectError as exc:
        return f"{path}: {_connect_failure(exc)}"
    except httpx.TimeoutException:
        return f"{path}: no response within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return f"{path}: {type(exc).__name__}: {_first_line(exc)}"


def _connect_failure(exc: BaseException) -> str:
    """The OS's reason (say "connection refused"), found under the wrappers httpx adds."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect ({_first_line(exc)})"


def _header_problems(resp: httpx.Response, test: str) -> list[str]:
    h = resp.headers
    out = [f"missing {name} header" for name in ("Server", "Date", "Content-Type") if name not in h]
    length = h.get("content-length")
    if length is None:
        if "chunked" not in h.get("transfer-encoding", "").lower():
            out.append("neither Content-Length nor chunked Transfer-Encoding")
    elif length.strip() != str(len(resp.content)):
        out.append(f"Content-Length {length} but {len(resp.content)} body bytes")
    date = h.get("date")
    if date is not None and not _is_http_date(date):
        out.append(f"Date {date!r} is not an HTTP date")
    ctype = h.get("content-type")
    if ctype is not None and not _content_type_ok(ctype, test):
        out.append(f"Content-Type {ctype!r}, expected {contract.CONTENT_TYPES[test]!r}")
    return out


def _is_http_date(value: str) -> bool:
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def _content_type_ok(value: str, test: str) -> bool:
    """The contract's media type exactly; charset=utf-8 is required where the contract names it
    (fortunes) and is the only parameter allowed elsewhere, as TFB's own check has it."""
    want_type, _, want_params = contract.CONTENT_TYPES[test].partition(";")
    got_type, _, got_params = value.partition(";")
    params = re.sub(r"\s+", "", got_params).lower()
    if got_type.strip() != want_type.strip():
        return False
    if want_params:
        return params == re.sub(r"\s+", "", want_params).lower()
    return params in ("", "charset=utf-8")


_INVALID = object()


def _parse_json(resp: httpx.Response, check: Check, path: str) -> Any:
    try:
        return json.loads(resp.content)
    except ValueError:
        check.fail(f"{path}: body is not JSON: {_short(resp.content)}")
        return _INVALID


def _row_problem(row: Any) -> str | None:
    """Why ``row`` is not exactly ``{"id": int, "randomNumber": int}`` with both in 1..10000."""
    if not isinstance(row, dict) or set(row) != ROW_KEYS:
        return f'expected {{"id": int, "randomNumber": int}}, got {_short(row)}'
    for key in ("id", "randomNumber"):
        value = row[key]
        if type(value) is not int:
            return f"{key} {value!r} is not an integer"
        if not 1 <= value <= contract.WORLD_ROWS:
            return f"{key} {value} outside 1..{contract.WORLD_ROWS}"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return _trim(text, limit)


def _trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
