"""The TechEmpower test contract as data: the one copy the verifier and the tests use.

Facts from ``shared/tfb-contract.md``. The fortunes here are the verifier's oracle,
deliberately independent of ``db/hello_world.sql``: if the data drifts, verification fails.
"""

from __future__ import annotations

import html

TESTS: tuple[str, ...] = (
    "json",
    "plaintext",
    "db",
    "queries",
    "fortunes",
    "updates",
    "cached-queries",
)

# URL path per test; parameterised tests take their count in the named query parameter.
PATHS: dict[str, str] = {
    "json": "/json",
    "plaintext": "/plaintext",
    "db": "/db",
    "queries": "/queries",
    "fortunes": "/fortunes",
    "updates": "/updates",
    "cached-queries": "/cached-queries",
}
PARAM: dict[str, str] = {"queries": "queries", "updates": "queries", "cached-queries": "count"}

CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "plaintext": "text/plain",
    "db": "application/json",
    "queries": "application/json",
    "fortunes": "text/html; charset=utf-8",
    "updates": "application/json",
    "cached-queries": "application/json",
}

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
    import re

    page = re.sub(r">\s+<", "><", page.strip())
    page = re.sub(r"\s+", " ", page)
    out = []
    for part in re.split(r"(<[^>]*>)", page):
        if part.startswith("<"):
            out.append(part.lower() if part.lower().startswith("<!doctype") else part)
        else:
            out.append(html.escape(html.unescape(part), quote=True))
    return "".join(out)
