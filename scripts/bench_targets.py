#!/usr/bin/env python3
"""Benchmark the targets natively and print peak requests/s per target and test.

    python scripts/bench_targets.py [--scenario quick] [--targets a,b] [--out results]

It is `benchlab run --native` plus a pivot of the run's summary.csv: a benchmark that prints
figures, not a timed test. The speed goals of the targets are judged from its output.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from benchlab.cli import main as benchlab


def pivot(run_dir: Path) -> str:
    """Tests as rows, targets as columns, closed-loop peak rps in the cells (⚠ = flagged)."""
    with (run_dir / "summary.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["mode"] == "closed"]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    tests = list(dict.fromkeys(r["test"] for r in rows))
    cell = {(r["test"], r["target"]): r for r in rows}
    lines = [f"{'test':<16}" + "".join(f"{t:>24}" for t in targets)]
    for test in tests:
        out = f"{test:<16}"
        for t in targets:
            r = cell.get((test, t))
            value = f"{float(r['peak_rps']):,.0f} @{r['peak_level']}" if r and r["peak_rps"] else "-"
            out += f"{value + (' ⚠' if r and r['flags'] else ''):>24}"
        lines.append(out)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="quick")
    parser.add_argument("--targets")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    out = Path(args.out)
    before = set(out.glob("*/")) if out.exists() else set()
    extra = ["--targets", args.targets] if args.targets else []
    code = benchlab(["run", "--native", "--scenario", args.scenario, "--out", str(out), *extra])
    new = sorted(set(out.glob("*/")) - before)
    if not new or not (new[-1] / "summary.csv").exists():
        return code or 1
    print(f"\npeak requests/s ({new[-1]}):\n{pivot(new[-1])}")
    return code


if __name__ == "__main__":
    sys.exit(main())
