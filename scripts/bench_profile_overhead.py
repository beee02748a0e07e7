"""What ``--profile`` costs a target: throughput with py-spy attached against without, interleaved.

Starts the native lab with the chosen targets, then for each target and test runs ``--pairs``
pairs of ``--seconds`` wrk steps at ``--connections``, one without py-spy and one with it
(``py-spy record --subprocesses --nonblocking`` at the default rate, as ``--profile`` runs it),
the order alternating so drift on a shared machine falls on both alike. Prints each pair's
throughput ratio, the median throughput lost, and py-spy's own CPU in cores.
The roles' CPUs come from ``BENCHLAB_CPUS_*`` as in a run (py-spy, a child of the load generator,
runs on its CPUs). Run: ``python scripts/bench_profile_overhead.py [--targets fastapi-uvicorn] [--tests json,db]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from benchlab.contract import TEST_TYPES
from benchlab.cpus import RoleCpus
from benchlab.engines import Load, Request, for_mode
from benchlab.harness import NativeLab
from benchlab.profiling.pyspy import SubprocessRecorder, find_py_spy
from benchlab.sampling import process_tree
from benchlab.targets import load_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", default="fastapi-uvicorn,flask-gunicorn-gevent")
    parser.add_argument("--tests", default="json,db")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    binary, engine = find_py_spy(), for_mode("closed")
    tmp = Path(tempfile.mkdtemp(prefix="profile-overhead-"))
    cpus = RoleCpus.from_env()
    with NativeLab(load_targets(args.targets.split(",")), cpus=cpus) as lab:
        if cpus.loadgen:
            os.sched_setaffinity(0, cpus.loadgen)
        for name, running in lab.running.items():
            master = running.process.pid
            for test in args.tests.split(","):
                spec = TEST_TYPES[test]
                request = Request(url=running.target.url + spec.path_for(1 if spec.param else None),
                                  method=spec.method, headers=spec.headers(), body=spec.body)  # fmt: skip
                load = Load(duration_s=args.seconds, connections=args.connections)
                engine.run(request, load, tmp / "primer.txt")
                ratios, cores = [], []
                for i in range(args.pairs):
                    rps = {}
                    for profiled in (False, True) if i % 2 == 0 else (True, False):
                        output = tmp / f"{name}-{test}-{i}.json"
                        recorder = SubprocessRecorder(binary, master, output) if profiled else None
                        if recorder:
                            recorder.start()
                        rps[profiled] = engine.run(request, load, tmp / "raw.txt").rps
                        if recorder:
                            recorder.stop()
                            cores.append((recorder.cpu_seconds or 0.0) / recorder.seconds)
                    ratios.append(rps[True] / rps[False])
                    print(f"{name} {test} pair {i + 1}: {rps[False]:,.0f} -> {rps[True]:,.0f} req/s "
                          f"({rps[True] / rps[False]:.3f})", flush=True)  # fmt: skip
                lost = 1 - statistics.median(ratios)
                print(f"{name} {test}: median throughput lost {lost:.1%} over {args.pairs} pairs; "
                      f"py-spy used {statistics.mean(cores):.2f} cores ({len(process_tree(master))} processes)",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
