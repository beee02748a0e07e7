"""What the upstream service costs while it holds many waits: the figure in README, "The upstream".

Starts the upstream as the harness does (its own venv, a free port, pinned to ``--cpus`` if
given), holds ``--connections`` waits open with wrk (each ``--ms`` long, so the rate is about
connections / wait), and reads the upstream's own counters (``/stats``) once every connection
is open and again ``--seconds`` later: waits answered per second, the most open at once, and the
upstream's CPU as a share of one core, set-up excluded. wrk needs as many open files as
connections; this raises its own soft limit to the hard one for wrk to inherit.

Run: ``python scripts/bench_upstream.py [--connections 10000] [--ms 2000] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from benchlab.cpus import parse_cpuset
from benchlab.harness import repo_root
from benchlab.upstream import Upstream, start_upstream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--ms", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--cpus", help="cpuset for the upstream, e.g. 1")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        raise SystemExit(f"open-file limit {hard} is below {args.connections} connections")
    cpus = parse_cpuset(args.cpus, "--cpus") if args.cpus else None
    with tempfile.TemporaryDirectory() as logs:
        upstream = start_upstream(repo_root(), Path(logs), cpus)
        try:
            run(upstream, args)
        finally:
            upstream.down()


def run(upstream: Upstream, args: argparse.Namespace) -> None:
    duration = int(args.seconds + 2 * args.ms / 1000 + 15)
    wrk = subprocess.Popen(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s", "--timeout", "30s",
         f"{upstream.url}/?ms={args.ms}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        most = 0
        while time.monotonic() < deadline:  # every connection open, and a wait's length to settle
            most = max(most, upstream.client.stats()["open"])
            if most >= args.connections:
                break
            time.sleep(0.2)
        time.sleep(args.ms / 1000)
        first, t0 = upstream.client.stats(), time.monotonic()
        end = t0 + args.seconds
        while time.monotonic() < end:
            most = max(most, upstream.client.stats()["open"])
            time.sleep(0.5)
        last, t1 = upstream.client.stats(), time.monotonic()
    finally:
        wrk.terminate()
        wrk.wait()
    wall = t1 - t0
    rate = (last["requests"] - first["requests"]) / wall
    cpu = (last["cpu_seconds"] - first["cpu_seconds"]) / wall
    user = (last["user_seconds"] - first["user_seconds"]) / wall
    print(f"upstream: {args.connections} connections (most open at once: {most}), {args.ms} ms waits, {wall:.1f} s")
    per_wait, in_user = 1e6 * cpu / max(rate, 1), 1e6 * user / max(rate, 1)
    print(f"  {rate:,.0f} waits/s answered, upstream CPU {100 * cpu:.1f} % of one core "
          f"({per_wait:.1f} us per wait: {in_user:.1f} in the process, "
          f"{per_wait - in_user:.1f} in the kernel)")  # fmt: skip
    print(f"  at 5,000 waits/s that is {per_wait * 5000 / 1e4:.1f} % of one core")


if __name__ == "__main__":
    main()
