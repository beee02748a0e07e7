"""The upstream test's throughput against what each target's concurrency model allows.

At a wait of W seconds and C connections, a stack that can hold every connection's wait at once
(async, gevent) serves at most C / W requests/s; one that holds a thread per wait serves at most
threads x workers / W (gthread, Granian's WSGI threads, FastAPI's def endpoints on AnyIO's
pool), whatever C is. Until the server's CPU is the limit, a stack should reach about that
figure (issue 24: within 10 %). The CPU ceiling is the rate the server would reach with all its
CPUs at the CPU per request it was measured at: where it is below the model's figure, the stack
is CPU-bound first; on a shared machine a server may get less than its CPUs (the server CPU
column says how much it got, the lab CPU column what every role used together: server, database,
load generator and upstream). This reads a run's ``results.csv`` (closed-loop upstream steps)
and ``run.json`` (workers and CPU sets) and prints, per target and level, the expected and
measured rates, their ratio, the CPU figures, and what limited the step:
- ``model``: within 10 % of the model's figure;
- ``server CPU``: the CPU ceiling is below the model's figure;
- ``lab CPU``: the roles together used 90 % or more of the CPUs they were given, so the server
  could not have had more (on a machine the roles share);
- ``-``: none of these: a shortfall the model does not explain.

Where the run also measured one connection (the ``upstream-model`` scenario does), the time one
call took there, uncontended (the wait as the stack sees it: the upstream's own lateness, the
client, the framework), gives a second expected figure: the same waits held over that time;
the limit column then judges against that one.

Close to its model's figure a stack is also close to its CPU: the queueing column is what a
closed system of that many waits allows when each worker process runs its Python on one core
at a time (one event loop, or one GIL), with the CPU per request measured at that level and the
rest of the one-call time spent waiting (exact mean value analysis, one queue per worker). Far
from saturation it equals the model's figure; near it, it falls below both the model and the
CPU ceiling, as waits queue for the CPU. Where other roles share the targets' CPUs, the CPU they
used (lab CPU less server CPU) slows each core the server gets by that share. A step within 10 %
of it is ``CPU queueing``.

Run: ``benchlab run --native --scenario upstream-model``, then ``python scripts/upstream_expected.py RUN_DIR``.

Thread counts are the targets' own
settings: gunicorn_conf.GTHREAD_THREADS, serve_granian.BLOCKING_THREADS, sync_app.ANYIO_THREADS.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from benchlab.cpus import cpuset_cpus
from benchlab.model.codec import read_rows
from benchlab.targets import load_targets

# Threads holding one wait each, per worker, by worker class or target (the targets' settings).
THREADED = {"gthread": 16, "wsgi threads": 16}
THREADED_TARGETS = {"fastapi-uvicorn-sync": 40}


def threads(name: str, worker_class: str) -> int | None:
    """Waits one worker holds at once, or None when it holds one per connection."""
    return THREADED_TARGETS.get(name) or THREADED.get(worker_class)


ROLES = ("server_cpu_cores", "db_cpu_cores", "loadgen_cpu_cores", "upstream_cpu_cores")
NEAR = 0.9  # within 10 % of a figure: reached it


LAB_ROLES = ("targets", "db", "loadgen", "upstream")


def role_cpus(meta: dict) -> dict[str, set[int]] | None:
    """Each native role's CPU set; None when one is not a local cpuset (compose or other hosts)."""
    sets = meta.get("cpus") or {}
    try:
        return {role: cpuset_cpus(str(sets[role])) for role in LAB_ROLES}
    except (KeyError, ValueError):
        return None


def queueing(waits: int, cpu_s: float, think_s: float) -> float:
    """Requests/s of one worker process holding ``waits`` waits, each needing ``cpu_s`` of its one
    core and ``think_s`` elsewhere (the rest of its one-call time): exact mean value analysis of one
    queue (the core) and one delay."""
    think, queued, rate = max(think_s, 0.0), 0.0, 0.0
    for n in range(1, waits + 1):
        response = cpu_s * (1 + queued)
        rate = n / (response + think)
        queued = rate * response
    return rate


def limit(ratio: float, ceiling: float | None, expected: float, lab: float | None, machine: int | None,
          queued_ratio: float | None) -> str:  # fmt: skip
    if ratio >= NEAR:
        return "model"
    if ceiling is not None and ceiling < expected:
        return "server CPU"
    if queued_ratio is not None and queued_ratio >= NEAR:
        return "CPU queueing"
    if lab is not None and machine and lab >= NEAR * machine:
        return "lab CPU"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    meta = json.loads((args.run_dir / "run.json").read_text())
    registry = {t.name: t for t in load_targets(["all"], env={})}
    cpus = len(cpuset_cpus(str(meta.get("cpus", {}).get("targets", "0-1"))))
    roles = role_cpus(meta)
    machine = len(set().union(*roles.values())) if roles else None  # the CPUs the roles had together
    # another role on the targets' CPUs: the server's processes then wait for a core behind it
    sharing = roles is not None and any(roles["targets"] & roles[role] for role in LAB_ROLES[1:])
    rates: dict[tuple[str, int, int], list[tuple[float, float | None, float | None]]] = defaultdict(list)
    alone: dict[tuple[str, int], list[float]] = defaultdict(list)  # (target, ms) -> mean latency at c=1
    for row in read_rows(args.run_dir):
        if row["test"] == "upstream" and row["mode"] == "closed" and row["rps"]:
            cpu = float(row["server_cpu_cores"]) if row["server_cpu_cores"] else None
            used = [float(row[r]) for r in ROLES if row[r]]
            lab = sum(used) if len(used) == len(ROLES) else None
            rates[(row["target"], int(row["concurrency"]), int(row["queries"]))].append((float(row["rps"]), cpu, lab))
            if row["concurrency"] == "1" and row["latency_mean_ms"]:
                alone[(row["target"], int(row["queries"]))].append(float(row["latency_mean_ms"]))
    row_format = " ".join(["{:32}", "{:>5}", "{:>4}", "{:>14}"] + ["{:>9}"] * 12 + ["{:>12}"])
    print(row_format.format("target", "c", "ms", "model", "expected", "measured", "ratio", "c=1 ms", "at c=1 ms",
                            "ratio", "server CPU", "us/req", "CPU ceiling", "queueing", "ratio", "lab CPU",
                            "limit"))  # fmt: skip
    for (name, conns, ms), samples in sorted(rates.items()):
        workers = int((meta.get("targets", {}).get(name) or {}).get("workers") or 1)
        held = threads(name, registry[name].worker_class if name in registry else "")
        model = f"{held}x{workers} threads" if held else f"{conns} conns"
        waits = min(conns, held * workers) if held else conns
        expected = waits / (ms / 1000)
        rps = statistics.median(s[0] for s in samples)
        cpu = _median([s[1] for s in samples])
        lab = _median([s[2] for s in samples])
        cpu_text = "-" if cpu is None else f"{cpu:.2f}/{cpus}"
        per_request = f"{1e6 * cpu / rps:,.0f}" if cpu and rps else "-"  # a level nothing was answered at has none
        ceiling = rps * cpus / cpu if cpu and rps else None  # all its CPUs at this CPU per request
        lab_text = "-" if lab is None else f"{lab:.2f}/{machine or '?'}"
        one = _median(list(alone.get((name, ms), [])))
        at_one = waits / (one / 1000) if one else None
        queued = queued_ratio = None
        if cpu and rps and conns > 1:
            # the other roles' CPU on shared cores slows each core the server gets by that share
            others = max(lab - cpu, 0.0) if lab is not None and sharing else 0.0
            slowdown = cpus / max(cpus - others, 0.1)
            cpu_s = cpu / rps
            queued = workers * queueing(waits // workers, cpu_s * slowdown, (one or ms) / 1000 - cpu_s)
            queued_ratio = rps / queued
        figures = (f"{expected:,.0f}", f"{rps:,.0f}", f"{rps / expected:.2f}",
                   "-" if one is None else f"{one:.2f}", "-" if at_one is None else f"{at_one:,.0f}",
                   "-" if at_one is None else f"{rps / at_one:.2f}", cpu_text, per_request,
                   "-" if ceiling is None else f"{ceiling:,.0f}",
                   "-" if queued is None else f"{queued:,.0f}", "-" if queued_ratio is None else f"{queued_ratio:.2f}",
                   lab_text,
                   limit(rps / (at_one or expected), ceiling, at_one or expected, lab, machine,
                         queued_ratio))  # fmt: skip
        print(row_format.format(name, conns, ms, model, *figures))


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


if __name__ == "__main__":
    main()
