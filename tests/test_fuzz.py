"""Bad input never gets a 5xx: fuzzed parameters, paths and headers against every target.

Parameterised endpoints must still answer TFB's way (200, rows clamped to 1..500) while the
request line is within what every server accepts; beyond that a 4xx (414, 431, 400) is fine.
"""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import quote, unquote, urlencode, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchlab import contract
from benchlab.targets import Target

# Gunicorn's default request-line limit (4094) is the smallest of the three servers.
SAFE_LINE = 4000
FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats().map(repr),
    st.sampled_from(["", "0", "-0", "-1", "1e3", "0x10", " 5", "+7", "1_0", "٣", "NaN", "inf", "500.0"]),
)
LONG = st.integers(min_value=500, max_value=8000).map(lambda n: "9" * n)
VALUES = st.one_of(NUMBERS, TEXT, LONG)
TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=30
)
# Headers that change message framing or the connection are not "bad input" but a different request.
FRAMING = {"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade", "te", "trailer"}
HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=200
)
RAW_PATH = st.text(alphabet="abcjsonqueriesdb/%.0123456789ABCDEFxyz?&=;~-_", max_size=80)
KNOWN_PATHS = {*(t.path for t in contract.TEST_TYPES.values()), "/benchlab/info"}


def get(target: Target, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body; status 0 when the server closed the connection without answering."""
    u = urlsplit(target.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return 0, b""
    finally:
        conn.close()


def route(path: str) -> str:
    """The route a request path names once decoded, with repeated and trailing slashes dropped."""
    return re.sub(r"/+", "/", unquote(path.split("?")[0])).rstrip("/") or "/"


def assert_rows(body: bytes, expected: int | None) -> None:
    rows = json.loads(body)
    assert isinstance(rows, list)
    assert 1 <= len(rows) <= contract.MAX_QUERIES
    if expected is not None:
        assert len(rows) == expected
    assert all(set(r) == {"id", "randomNumber"} and 1 <= r["id"] <= contract.WORLD_ROWS for r in rows)


@FUZZ
@given(
    test=st.sampled_from(["queries", "updates", "cached-queries"]),
    values=st.lists(VALUES, min_size=1, max_size=3),
    junk=st.lists(st.tuples(TEXT, TEXT), max_size=2),
)
def test_parameters(target: Target, test: str, values: list[str], junk: list[tuple[str, str]]) -> None:
    query = urlencode([(contract.TEST_TYPES[test].param, v) for v in values] + junk, quote_via=quote)
    path = f"{contract.TEST_TYPES[test].path}?{query}"
    status, body = get(target, path)
    assert 0 < status < 500 or len(path) > SAFE_LINE, f"{status} for {path[:200]!r}"
    assert status < 500, f"{status} for {path[:200]!r}"
    if len(path) <= SAFE_LINE:
        assert status == 200, f"{status} for {path[:200]!r}: {body[:100]!r}"
    if status == 200:
        # Which of repeated parameters counts is the framework's choice; a single one is exact.
        single = len(values) == 1 and all(k != contract.TEST_TYPES[test].param for k, _ in junk)
        assert_rows(body, contract.clamp_queries(values[0]) if single else None)


@FUZZ
@given(segments=st.lists(TEXT, min_size=1, max_size=4), raw=RAW_PATH)
def test_paths(target: Target, segments: list[str], raw: str) -> None:
    for path in ("/" + "/".join(quote(s, safe="") for s in segments), "/" + raw):
        status, _ = get(target, path)
        assert 0 < status < 500, f"{status} for {path!r}"
        assert status != 200 or route(path) in KNOWN_PATHS, f"200 for unknown {path!r}"


@FUZZ
@given(
    path=st.sampled_from(["/json", "/queries?queries=3", "/fortunes", "/updates?queries=2"]),
    headers=st.dictionaries(TOKEN.filter(lambda n: n.lower() not in FRAMING), HEADER_VALUE, max_size=6),
)
def test_headers(target: Target, path: str, headers: dict[str, str]) -> None:
    status, _ = get(target, path, headers)
    assert 0 < status < 500, f"{status} for {path} with {headers!r}"
