"""The TechEmpower test contract as data: the one copy the verifier, the load and the tests use.

Facts from ``shared/tfb-contract.md``. Each test type is one ``TestType``: its request (path,
parameter, method, body, Accept), its response's content type, what the database must show
(stored values, query counts) and its own body check. Everything else (scenarios, the
verifier, calibration, charts) reads these specs instead of naming tests. The fortunes here
are the verifier's oracle, deliberately independent of ``db/hello_world.sql``: if the data
drifts, verification fails.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

JSON_BODY = {"message": "Hello, World!"}
PLAINTEXT_BODY = b"Hello, World!"

# The parameter cases TFB checks, with the row count each must yield.
PARAM_CASES: tuple[tuple[str, int], ...] = (("2", 2), ("0", 1), ("foo", 1), ("", 1), ("501", 500))
MAX_QUERIES = 500
WORLD_ROWS = 10_000

FORTUNES: dict[int, str] = {
    1: "fortune: No such file or directory",
    2: "A computer scientist is someone who fixes things that aren't broken.",
    3: "After enough decimal places, nobody gives a damn.",
    4: "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    5: "A computer program does what you tell it to do, not what you want it to do.",
    6: "Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen",
    7: "Any program that runs right is obsolete.",
    8: "A list is only as strong as its weakest link. — Donald Knuth",
    9: "Feature: A bug with seniority.",
    10: "Computers make very fast, very accurate mistakes.",
    11: '<script>alert("This should not be displayed in a browser alert box.");</script>',
    12: "フレームワークのベンチマーク",
}
EXTRA_FORTUNE = (0, "Additional fortune added at request time.")
FORTUNE_ORDER: tuple[int, ...] = (11, 4, 5, 2, 8, 0, 3, 7, 10, 6, 9, 1, 12)


# benchlab's own upstream test: GET /upstream?ms=N waits N ms on the upstream service. The
# parameter cases, read as leniently as TFB's counts, with the wait each must give.
DEFAULT_WAIT_MS = 20
MAX_WAIT_MS = 10_000
WAIT_CASES: tuple[tuple[str, int], ...] = (("", 20), ("foo", 20), ("0", 0), ("-5", 0), ("50", 50), ("10001", 10_000))
# Who defined a test: TechEmpower, or benchlab (its own tests, labelled so wherever they are shown).
Origin = Literal["tfb", "benchlab"]


def clamp_queries(raw: str | None) -> int:
    """TFB's rule: missing, empty, non-integer or < 1 gives 1; > 500 gives 500."""
    try:
        n = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1
    return 1 if n < 1 else min(n, MAX_QUERIES)


def expected_fortunes_page() -> str:
    """The fortunes page TFB expects, already whitespace-normalised (see ``normalise_html``)."""
    rows = dict(FORTUNES)
    rows[EXTRA_FORTUNE[0]] = EXTRA_FORTUNE[1]
    body = "".join(
        f"<tr><td>{i}</td><td>{html.escape(rows[i], quote=True)}</td></tr>" for i in FORTUNE_ORDER
    )
    return (
        "<!doctype html><html><head><title>Fortunes</title></head><body><table>"
        "<tr><th>id</th><th>message</th></tr>" + body + "</table></body></html>"
    )


def normalise_html(page: str) -> str:
    """Whitespace between tags removed and entities unified, as TFB compares pages.

    Escaped forms differ legitimately between template engines (``&#39;`` vs ``&#x27;``,
    ``&quot;`` vs ``&#34;``); unescaping then re-escaping text makes them equal while
    still failing an unescaped ``<script>``.
    """
    page = re.sub(r">\s+<", "><", page.strip())
    page = re.sub(r"\s+", " ", page)
    out = []
    for part in re.split(r"(<[^>]*>)", page):
        if part.startswith("<"):
            out.append(part.lower() if part.lower().startswith("<!doctype") else part)
        else:
            out.append(html.escape(html.unescape(part), quote=True))
    return "".join(out)


# --- test types -------------------------------------------------------------------------------

# The Accept header TechEmpower's load sends per test (its test types' accept() values).
ACCEPT_JSON = "application/json,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_PLAINTEXT = "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
JSON_TYPE = "application/json"
ROW_KEYS = frozenset({"id", "randomNumber"})

Row = dict[str, int]
# A test's own check of a response body: given the body and the rows the case must return,
# the rows to compare with the database (none for tests without rows), or BodyProblem raised.
BodyCheck = Callable[[bytes, int], list[Row]]
# How returned rows must match the stored ones: "exact" (db, queries); "cached" (may be stale
# after updates: only warns, once over all cases); "written" (the rows just written: any value
# returned for a repeated id may be the stored one, and most of the table must change at 500).
Stored = Literal["exact", "cached", "written"]


class BodyProblem(ValueError):
    """What is wrong with a response body, as the verifier reports it after the request's path."""


@dataclass(frozen=True)
class QueryCount:
    """TFB's pg_stat_statements rule for one test, per response: which table is read and how."""

    table: str
    rows_per_select: int | None = None  # None: every row read is its own one-row SELECT
    writes_back: bool = False  # also every row read written once: one UPDATE per response, or one per row


@dataclass(frozen=True)
class TestType:
    """One test type: what the load sends, what must come back, what the database must show."""

    name: str
    path: str
    content_type: str  # the response's, as TFB checks it
    accept: str  # the Accept header the load sends
    check_body: BodyCheck
    param: str | None = None  # the query parameter carrying the row count, if the test takes one
    method: str = "GET"
    body: bytes | None = None
    body_type: str | None = None  # the request body's Content-Type
    uses_db: bool = False
    stored: Stored | None = None
    query_count: QueryCount | None = None
    origin: Origin = "tfb"
    param_cases: tuple[tuple[str, int], ...] = PARAM_CASES
    param_max: int = MAX_QUERIES  # the largest value a scenario may give the parameter
    waits: bool = False  # the parameter is a wait in ms on the upstream (verified in time and calls)

    def __post_init__(self) -> None:
        if (self.body is None) != (self.body_type is None):
            raise ValueError(f"{self.name}: a request body and its content type go together")

    @property
    def writes(self) -> bool:
        """Changes the database: verified one target at a time, after every read-only test."""
        return self.stored == "written"

    def path_for(self, value: int | str | None = None) -> str:
        """``/queries?queries=5``, ``/cached-queries?count=20``, ``/json``; ``value`` is ignored
        by a test without a parameter, and quoted as given otherwise (TFB's cases include ``foo``)."""
        if value is None or self.param is None:
            return self.path
        return f"{self.path}?{self.param}={quote(str(value), safe='')}"

    def headers(self) -> dict[str, str]:
        """The request headers the load sends: Accept, and the body's Content-Type if it has one."""
        out = {"Accept": self.accept}
        if self.body_type is not None:
            out["Content-Type"] = self.body_type
        return out

    def cases(self) -> tuple[tuple[str | None, int], ...]:
        """The requests verification makes, with the rows each must return: TFB's parameter
        cases for a parameterised test, else the bare path (one row where rows are returned)."""
        return self.param_cases if self.param is not None else ((None, 1),)

    @property
    def label(self) -> str:
        """The test's name as every output shows it: benchlab's own tests say so."""
        return self.name if self.origin == "tfb" else f"{self.name} (benchlab's own, not TechEmpower's)"


def short(value: Any, limit: int = 60) -> str:
    """A body or value cut down to fit in a one-line reason."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return trim(text, limit)


def trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise BodyProblem(f"body is not JSON: {short(content)}") from None


def row_problem(row: Any) -> str | None:
    """Why ``row`` is not exactly ``{"id": int, "randomNumber": int}`` with both in 1..10000."""
    if not isinstance(row, dict) or set(row) != ROW_KEYS:
        return f'expected {{"id": int, "randomNumber": int}}, got {short(row)}'
    for key in ("id", "randomNumber"):
        value = row[key]
        if type(value) is not int:
            return f"{key} {value!r} is not an integer"
        if not 1 <= value <= WORLD_ROWS:
            return f"{key} {value} outside 1..{WORLD_ROWS}"
    return None


def check_json(content: bytes, rows: int) -> list[Row]:
    """The message object exactly: an extra key fails (TFB only warns)."""
    body = _json(content)
    if body != JSON_BODY:
        raise BodyProblem(f"body {short(body)}, expected {JSON_BODY}")
    return []


def check_plaintext(content: bytes, rows: int) -> list[Row]:
    if content != PLAINTEXT_BODY:
        raise BodyProblem(f"body {short(content)}, expected {PLAINTEXT_BODY!r}")
    return []


def check_row(content: bytes, rows: int) -> list[Row]:
    """One world row object (not an array)."""
    body = _json(content)
    problem = row_problem(body)
    if problem:
        raise BodyProblem(problem)
    return [body]


def check_rows(content: bytes, rows: int) -> list[Row]:
    """An array of exactly ``rows`` world rows."""
    body = _json(content)
    if not isinstance(body, list):
        raise BodyProblem(f"expected a JSON array of {rows} rows, got {short(body)}")
    if len(body) != rows:
        raise BodyProblem(f"{len(body)} rows, expected {rows}")
    for row in body:
        problem = row_problem(row)
        if problem:
            raise BodyProblem(problem)
    return body


def check_fortunes(content: bytes, rows: int) -> list[Row]:
    """UTF-8, and the expected page once whitespace and entity spelling are normalised."""
    try:
        page = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyProblem(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    got, want = normalise_html(page), expected_fortunes_page()
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        lo = max(0, at - 30)
        raise BodyProblem(f"page differs at char {at}: got {got[lo : at + 50]!r}, expected {want[lo : at + 50]!r}")
    return []


def check_upstream(content: bytes, ms: int) -> list[Row]:
    """The upstream's answer, passed through: exactly ``{"upstream": "benchlab", "ms": ms}``."""
    body = _json(content)
    want = {"upstream": "benchlab", "ms": ms}
    if body != want:
        raise BodyProblem(f"body {short(body)}, expected {want}")
    return []


ROUTES_ID = 4242  # the id GET /r999/{id} is asked for


def check_routes(content: bytes, rows: int) -> list[Row]:
    """The last of an app's 1,000 parameterised routes: exactly ``{"route": 999, "id": ROUTES_ID}``."""
    body = _json(content)
    want = {"route": 999, "id": ROUTES_ID}
    if body != want:
        raise BodyProblem(f"body {short(body)}, expected {want}")
    return []


_ONE_SELECT_PER_ROW = QueryCount("world")
TEST_TYPES: dict[str, TestType] = {
    t.name: t
    for t in (
        TestType("json", "/json", JSON_TYPE, ACCEPT_JSON, check_json),
        TestType("plaintext", "/plaintext", "text/plain", ACCEPT_PLAINTEXT, check_plaintext),
        TestType("db", "/db", JSON_TYPE, ACCEPT_JSON, check_row,
                 uses_db=True, stored="exact", query_count=_ONE_SELECT_PER_ROW),
        TestType("queries", "/queries", JSON_TYPE, ACCEPT_JSON, check_rows, param="queries",
                 uses_db=True, stored="exact", query_count=_ONE_SELECT_PER_ROW),
        TestType("fortunes", "/fortunes", "text/html; charset=utf-8", ACCEPT_HTML, check_fortunes,
                 uses_db=True, query_count=QueryCount("fortune", rows_per_select=len(FORTUNES))),
        TestType("updates", "/updates", JSON_TYPE, ACCEPT_JSON, check_rows, param="queries",
                 uses_db=True, stored="written", query_count=QueryCount("world", writes_back=True)),
        TestType("cached-queries", "/cached-queries", JSON_TYPE, ACCEPT_JSON, check_rows, param="count",
                 uses_db=True, stored="cached"),
        TestType("upstream", "/upstream", JSON_TYPE, ACCEPT_JSON, check_upstream, param="ms", origin="benchlab",
                 param_cases=WAIT_CASES, param_max=MAX_WAIT_MS, waits=True),
        TestType("routes", f"/r999/{ROUTES_ID}", JSON_TYPE, ACCEPT_JSON, check_routes, origin="benchlab"),
    )
}  # fmt: skip
TESTS: tuple[str, ...] = tuple(TEST_TYPES)
def test_label(name: str) -> str:
    """How outputs name a test: its spec's label (benchlab's own tests say so), else the name."""
    spec = TEST_TYPES.get(name)
    return spec.label if spec else name


TFB_TESTS: tuple[str, ...] = tuple(name for name, t in TEST_TYPES.items() if t.origin == "tfb")
COUNTED_TESTS: tuple[str, ...] = tuple(name for name, t in TEST_TYPES.items() if t.query_count is not None)
