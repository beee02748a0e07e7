"""The checks of benchlab's own upstream test (not TechEmpower's) beyond its body: the time a
call takes and the calls the upstream saw.

- Each case takes at least its wait (a target that answers sooner did not wait on the upstream).
- At low concurrency (one target, one call at a time) a 20 ms wait takes at most 25 ms (best
  of LOW_CONCURRENCY_TRIES calls, so one scheduling hiccup does not fail it): the stack adds at
  most OVERHEAD_MS to the wait. The rule is for an idle machine: on a busy one (a load average
  above its CPUs) a miss is a warning that says so.
- The upstream counted exactly one request per call (COUNTED_CALLS sequential calls, one target
  at a time, as query counts are: the upstream's counter is the whole lab's).
"""

from __future__ import annotations

import os

import httpx

from benchlab.contract import DEFAULT_WAIT_MS, TestType
from benchlab.targets import Target
from benchlab.verification.checks import ContractCheck, Verification
from benchlab.verification.responses import first_line, send

NO_UPSTREAM = "no upstream URL: calls to the upstream not counted"
OVERHEAD_MS = 5.0
LOW_CONCURRENCY_TRIES = 5
COUNTED_CALLS = 10


def timeout_for(run: Verification, spec: TestType, wait_ms: int | None) -> float:
    """A waiting test's request may take its wait on top of the verifier's usual bound."""
    return run.timeout_s + (wait_ms or 0) / 1000 if spec.waits else run.timeout_s


def check_elapsed(check: ContractCheck, path: str, resp: httpx.Response, wait_ms: int) -> None:
    took_ms = resp.elapsed.total_seconds() * 1000
    if took_ms < wait_ms:
        check.fail(f"{path}: answered after {took_ms:.1f} ms, before the {wait_ms} ms wait was over")


async def check_low_concurrency(client: httpx.AsyncClient, run: Verification, target: Target, spec: TestType) -> None:
    check = run.check(target, spec.name)
    best: float | None = None
    for _ in range(LOW_CONCURRENCY_TRIES):
        resp = await send(client, target.url, spec, str(DEFAULT_WAIT_MS), run.timeout_s)
        if isinstance(resp, str) or resp.status_code != 200:
            return  # the case checks already said why
        took = resp.elapsed.total_seconds() * 1000
        best = took if best is None else min(best, took)
    limit = DEFAULT_WAIT_MS + OVERHEAD_MS
    if best is not None and best > limit:
        reason = (
            f"{spec.path_for(DEFAULT_WAIT_MS)}: {best:.1f} ms at best of {LOW_CONCURRENCY_TRIES} sequential calls, "
            f"expected at most {limit:g} ms on an idle machine"
        )
        load = busy()
        if load is None:
            check.fail(reason)
        else:
            check.warn(f"{reason}; not judged: this machine is busy ({load})")


def busy() -> str | None:
    """Why this machine is not idle (a load average above its CPUs), or None when it is."""
    load, cpus = os.getloadavg()[0], len(os.sched_getaffinity(0))
    return f"load average {load:.1f} on {cpus} CPUs" if load > cpus else None


async def check_waits(
    client: httpx.AsyncClient, run: Verification, targets: list[Target], upstream_url: str | None
) -> None:
    """One target at a time, with nothing else verified meanwhile: the time at low concurrency,
    then COUNTED_CALLS calls that must add exactly COUNTED_CALLS to the upstream's count."""
    specs = [spec for spec in run.specs if spec.waits]
    for spec in specs:
        for target in targets:
            await check_low_concurrency(client, run, target, spec)
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
