"""The upstream test's throughput against what each target's concurrency model allows.

At a wait of W seconds and C connections, a stack that can hold every connection's wait at once
(async, gevent) serves at most C / W requests/s; one that holds a thread per wait serves at most
threads x workers / W (gthread, Granian's WSGI threads, FastAPI's def endpoints on AnyIO's
pool), whatever C is. Until the server's CPU is the limit, a stack should reach about that
figure (issue 24: within 10 %). The CPU ceiling is the rate the server would reach with all its
CPUs at the CPU per request it was measured at: where it is below the model's figure, the stack
is CPU-bound first; on a shared machine a server may get less than its CPUs (the server CPU
column says how much it got). This reads a run's ``results.csv`` (closed-loop upstream steps)
and ``run.json`` (workers per target) and prints, per target and level, the expected and
measured rates, their ratio, and the server's CPU, so a shortfall can be told from a CPU limit.

Run: ``python scripts/upstream_expected.py RUN_DIR``. Thread counts are the targets' own
settings: gunicorn_conf.GTHREAD_THREADS, serve_granian.BLOCKING_THREADS, sync_app.ANYIO_THREADS.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from benchlab.model.codec import read_rows
from benchlab.targets import load_targets

# Threads holding one wait each, per worker, by worker class or target (the targets' settings).
THREADED = {"gthread": 16, "wsgi threads": 16}
THREADED_TARGETS = {"fastapi-uvicorn-sync": 40}


def threads(name: str, worker_class: str) -> int | None:
    """Waits one worker holds at once, or None when it holds one per connection."""
    return THREADED_TARGETS.get(name) or THREADED.get(worker_class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    meta = json.loads((args.run_dir / "run.json").read_text())
    registry = {t.name: t for t in load_targets(["all"], env={})}
    cpus = len(str(meta.get("cpus", {}).get("targets", "0-1")).replace("-", ",").split(","))
    rates: dict[tuple[str, int, int], list[tuple[float, float | None]]] = defaultdict(list)
    for row in read_rows(args.run_dir):
        if row["test"] == "upstream" and row["mode"] == "closed" and row["rps"]:
            cpu = float(row["server_cpu_cores"]) if row["server_cpu_cores"] else None
            rates[(row["target"], int(row["concurrency"]), int(row["queries"]))].append((float(row["rps"]), cpu))
    row_format = "{:32} {:>5} {:>4} {:>14} {:>9} {:>9} {:>6} {:>10} {:>8} {:>11}"
    print(row_format.format("target", "c", "ms", "model", "expected", "measured", "ratio", "server CPU",
                            "us/req", "CPU ceiling"))  # fmt: skip
    for (name, conns, ms), samples in sorted(rates.items()):
        workers = int((meta.get("targets", {}).get(name) or {}).get("workers") or 1)
        held = threads(name, registry[name].worker_class if name in registry else "")
        model = f"{held}x{workers} threads" if held else f"{conns} conns"
        waits = min(conns, held * workers) if held else conns
        expected = waits / (ms / 1000)
        rps = statistics.median(s[0] for s in samples)
        cpu_values = [s[1] for s in samples if s[1] is not None]
        cpu = statistics.median(cpu_values) if cpu_values else None
        cpu_text = "-" if cpu is None else f"{cpu:.2f}/{cpus}" + (" (CPU)" if cpu >= 0.9 * cpus else "")
        per_request = f"{1e6 * cpu / rps:,.0f}" if cpu and rps else "-"  # a level nothing was answered at has none
        ceiling = f"{rps * cpus / cpu:,.0f}" if cpu and rps else "-"  # all its CPUs at this CPU per request
        figures = (f"{expected:,.0f}", f"{rps:,.0f}", f"{rps / expected:.2f}", cpu_text, per_request, ceiling)
        print(row_format.format(name, conns, ms, model, *figures))


if __name__ == "__main__":
    main()
