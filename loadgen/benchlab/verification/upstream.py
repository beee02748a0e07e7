"""The checks of benchlab's own upstream test (not TechEmpower's) beyond its body: the time a
call takes and the calls the upstream saw.

- Each case takes at least its wait (a target that answers sooner did not wait on the upstream).
- At low concurrency (one target, one call at a time) a 20 ms wait takes at most 25 ms (best
  of LOW_CONCURRENCY_TRIES calls on one kept-alive connection, so one scheduling hiccup does
  not fail it): the stack adds at most OVERHEAD_MS to the wait. These calls are timed with a
  lean client (asyncio's streams and h11, as wrk times them): httpx's own work adds about
  1.5 ms a call on a 2-core virtual machine, which would be charged to the stack. The rule is
  for an idle machine: when this machine's CPUs were more than BUSY_SHARE in use while the calls
  ran, a miss is a warning that says so.
- The upstream counted exactly one request per call (COUNTED_CALLS sequential calls, one target
  at a time, as query counts are: the upstream's counter is the whole lab's).
"""

from __future__ import annotations

import asyncio
import time

import h11
import httpx
import psutil

from benchlab.contract import DEFAULT_WAIT_MS, TestType
from benchlab.targets import Target
from benchlab.verification.checks import ContractCheck, Verification
from benchlab.verification.responses import first_line, send

NO_UPSTREAM = "no upstream URL: calls to the upstream not counted"
OVERHEAD_MS = 5.0
LOW_CONCURRENCY_TRIES = 5
BUSY_SHARE = 0.5
COUNTED_CALLS = 10


def timeout_for(run: Verification, spec: TestType, wait_ms: int | None) -> float:
    """A waiting test's request may take its wait on top of the verifier's usual bound."""
    return run.timeout_s + (wait_ms or 0) / 1000 if spec.waits else run.timeout_s


def check_elapsed(check: ContractCheck, path: str, resp: httpx.Response, wait_ms: int) -> None:
    took_ms = resp.elapsed.total_seconds() * 1000
    if took_ms < wait_ms:
        check.fail(f"{path}: answered after {took_ms:.1f} ms, before the {wait_ms} ms wait was over")


async def check_low_concurrency(run: Verification, target: Target, spec: TestType) -> None:
    check = run.check(target, spec.name)
    path = spec.path_for(DEFAULT_WAIT_MS)
    before = psutil.cpu_times()
    try:
        best = min(await timed_calls(target.url, path, LOW_CONCURRENCY_TRIES, run.timeout_s))
    except (OSError, TimeoutError, h11.ProtocolError, ValueError) as exc:
        check.warn(f"{path}: not timed at low concurrency ({first_line(exc) or type(exc).__name__})")
        return
    limit = DEFAULT_WAIT_MS + OVERHEAD_MS
    if best > limit:
        reason = (
            f"{path}: {best:.1f} ms at best of {LOW_CONCURRENCY_TRIES} sequential calls, "
            f"expected at most {limit:g} ms on an idle machine"
        )
        load = busy(before, psutil.cpu_times())
        if load is None:
            check.fail(reason)
        else:
            check.warn(f"{reason}; not judged: this machine is busy ({load})")


def busy(before: tuple[float, ...], after: tuple[float, ...]) -> str | None:
    """Why this machine was not idle between two ``psutil.cpu_times()`` (more than BUSY_SHARE of
    its CPUs in use), or None when it was."""
    fields = [name for name in after._fields if not name.startswith("guest")]  # type: ignore[attr-defined]
    spent = {name: getattr(after, name) - getattr(before, name) for name in fields}  # guest time is in user's
    total = sum(spent.values())
    idle = spent["idle"] + spent.get("iowait", 0.0)
    share = 1 - idle / total if total > 0 else 0.0
    return f"{share:.0%} of its {psutil.cpu_count()} CPUs in use" if share > BUSY_SHARE else None


async def timed_calls(base_url: str, path: str, calls: int, timeout_s: float) -> list[float]:
    """The times in ms of ``calls`` sequential GETs of ``path`` on one kept-alive connection, each
    from its request's write to its response's last byte. Raises when a call fails or is not 200."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), timeout_s)
    conn = h11.Connection(h11.CLIENT)
    request = (h11.Request(method="GET", target=path, headers=[("Host", url.netloc.decode())]), h11.EndOfMessage())
    times: list[float] = []
    try:
        for _ in range(calls):
            start = time.perf_counter()
            writer.write(b"".join(conn.send(event) or b"" for event in request))
            status = await asyncio.wait_for(_status(reader, conn), timeout_s)
            times.append((time.perf_counter() - start) * 1000)
            if status != 200:
                raise ValueError(f"status {status}")
            conn.start_next_cycle()
    finally:
        writer.close()
    return times


async def _status(reader: asyncio.StreamReader, conn: h11.Connection) -> int:
    """The status of the response ``conn`` is reading, once all of it has arrived."""
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            return status
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("the target closed the connection")


async def check_waits(
    client: httpx.AsyncClient, run: Verification, targets: list[Target], upstream_url: str | None
) -> None:
    """One target at a time, with nothing else verified meanwhile: the time at low concurrency,
    then COUNTED_CALLS calls that must add exactly COUNTED_CALLS to the upstream's count."""
    specs = [spec for spec in run.specs if spec.waits]
    for spec in specs:
        for target in targets:
            await check_low_concurrency(run, target, spec)
            check = run.check(target, spec.name)
            if upstream_url is None:
                check.warn(NO_UPSTREAM)
                continue
            try:
                before = await _count(client, upstream_url)
                ok = 0
                for _ in range(COUNTED_CALLS):
                    resp = await send(client, target.url, spec, "0", run.timeout_s)
                    ok += isinstance(resp, httpx.Response) and resp.status_code == 200
                after = await _count(client, upstream_url)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                check.warn(f"upstream {upstream_url} unreadable ({first_line(exc)}): calls not counted")
                continue
            if ok == COUNTED_CALLS and after - before != COUNTED_CALLS:
                check.fail(f"the upstream saw {after - before} requests for {COUNTED_CALLS} calls, expected one each")


async def _count(client: httpx.AsyncClient, upstream_url: str) -> int:
    resp = await client.get(upstream_url + "/stats")
    resp.raise_for_status()
    return int(resp.json()["requests"])
