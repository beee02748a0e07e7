"""What the step sampler costs the load generator: its CPU at the default interval, idle load.

Starts the lab's baseline server (one worker), runs one ``StepSampler`` for ``--seconds`` at
its default interval and prints the load generator process's CPU over that time, as a share
of one core and per sample. Run: ``python scripts/bench_sampler.py [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import time

from benchlab.baseline import BaselineServer
from benchlab.sampling import StepSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with BaselineServer(workers=1) as server:
        sampler = StepSampler(server.url)
        cpu0, wall0 = time.process_time(), time.monotonic()
        sampler.start()
        time.sleep(args.seconds)
        result = sampler.stop()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    samples = result.server_samples
    print(f"interval {sampler.interval_s:g} s, {wall:.1f} s, {samples} server samples")
    print(f"sampler CPU: {cpu * 1000:.0f} ms = {100 * cpu / wall:.2f} % of one core, "
          f"{cpu * 1000 / max(samples, 1):.2f} ms per sample")  # fmt: skip


if __name__ == "__main__":
    main()
