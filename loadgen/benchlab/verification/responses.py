"""HTTP for the verifier: a test's request as its spec defines it (method, headers, body), and
the checks every response gets (status, Server/Date/Content-Type, length, Date format)."""

from __future__ import annotations

import email.utils
import os
import re

import httpx

from benchlab.contract import TestType, short
from benchlab.verification.checks import ContractCheck


async def send(
    client: httpx.AsyncClient, base_url: str, spec: TestType, value: str | None, timeout_s: float
) -> httpx.Response | str:
    """The response to ``spec``'s request with ``value`` as its parameter, or a short reason why there is none."""
    path = spec.path_for(value)
    try:
        return await client.request(
            spec.method, base_url + path, headers=spec.headers(), content=spec.body, timeout=timeout_s
        )
    except httpx.ConnectError as exc:
        return f"{path}: {_connect_failure(exc)}"
    except httpx.TimeoutException:
        return f"{path}: no response within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return f"{path}: {type(exc).__name__}: {first_line(exc)}"


async def fetch(
    client: httpx.AsyncClient,
    base_url: str,
    spec: TestType,
    check: ContractCheck,
    value: str | None,
    timeout_s: float,
) -> httpx.Response | None:
    """``send`` with the checks every response gets: status, headers. None when there is no body to check."""
    path = spec.path_for(value)
    resp = await send(client, base_url, spec, value, timeout_s)
    if isinstance(resp, str):
        check.fail(resp)
        return None
    if resp.status_code != 200:
        check.fail(f"{path}: status {resp.status_code}, expected 200 ({short(resp.text)})")
        return None
    for problem in header_problems(resp, spec.content_type):
        check.fail(f"{path}: {problem}")
    return resp


def header_problems(resp: httpx.Response, content_type: str) -> list[str]:
    """TFB's header rules: Server, Date (an HTTP date), Content-Type as ``content_type``, a length."""
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
    if ctype is not None and not _content_type_ok(ctype, content_type):
        out.append(f"Content-Type {ctype!r}, expected {content_type!r}")
    return out


def _is_http_date(value: str) -> bool:
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def _content_type_ok(value: str, expected: str) -> bool:
    """The contract's media type exactly; charset=utf-8 is required where the contract names it
    (fortunes) and is the only parameter allowed elsewhere, as TFB's own check has it."""
    want_type, _, want_params = expected.partition(";")
    got_type, _, got_params = value.partition(";")
    params = re.sub(r"\s+", "", got_params).lower()
    if got_type.strip() != want_type.strip():
        return False
    if want_params:
        return params == re.sub(r"\s+", "", want_params).lower()
    return params in ("", "charset=utf-8")


def _connect_failure(exc: BaseException) -> str:
    """The OS's reason (say "connection refused"), found under the wrappers httpx adds."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect ({first_line(exc)})"


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
