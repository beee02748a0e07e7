"""Runs derived from a real run for report, compare and claims tests.

The real smoke run gives the true format and real figures; tests then change it in
known ways (repeats, slower B, a flagged step) so the expected outcome is known.
Nothing here invents a run from scratch.
"""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchlab.model.codec import COLUMNS, CSV_NAME, read_rows
from benchlab.rundir import RUN_JSON

LATENCY = [c for c in COLUMNS if c.startswith("latency_")]
# Deterministic repeat-to-repeat noise: a few percent, like a quiet machine.
JITTER = (1.0, 0.97, 1.025, 0.985, 1.015)

Row = dict[str, str]


def copy_run(src: Path, dst: Path) -> Path:
    """A copy without derived files, so each test starts from the run as the runner left it."""
    skip = shutil.ignore_patterns("report.html", "summary.csv", "charts", "compare.csv", "*.tmp")
    shutil.copytree(src, dst, ignore=skip)
    return dst


def rewrite_rows(run_dir: Path, change: Callable[[Row], Iterable[Row]]) -> None:
    """Replaces each CSV row by the rows ``change`` returns for it (none, itself, or several)."""
    rows = [new for row in read_rows(run_dir) for new in change(dict(row))]
    with (run_dir / CSV_NAME).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def edit_run_json(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((run_dir / RUN_JSON).read_text())
    change(meta)
    (run_dir / RUN_JSON).write_text(json.dumps(meta, indent=2))


def scaled(row: Row, rps: float = 1.0, latency: float = 1.0) -> Row:
    """The row with throughput (and request count) times ``rps`` and every latency times ``latency``."""
    out = dict(row)
    for col, factor in [("rps", rps), ("requests", rps), *((c, latency) for c in LATENCY)]:
        if out.get(col):
            out[col] = repr(float(out[col]) * factor)
    return out


def with_repeats(run_dir: Path, n: int = 3) -> None:
    """Each step of repeat 1 repeated n times with small deterministic noise, as ``repeats: n`` gives."""

    def repeat(row: Row) -> list[Row]:
        out: list[Row] = []
        if row["repeat"] != "1":
            return out
        for r in range(1, n + 1):
            f = JITTER[(r - 1) % len(JITTER)]
            new = scaled(row, rps=f, latency=1 / f)
            new["repeat"] = str(r)
            new["step_id"] = f"{row.get('step_id', '')}#r{r}"
            out.append(new)
        return out

    rewrite_rows(run_dir, repeat)


def with_noise(run_dir: Path, seed: str, levels: int = 40, n: int = 4, sigma: float = 0.03) -> None:
    """The run as ``levels`` closed-loop levels of pure noise, n repeats each: level i (concurrency
    i + 1) takes the figures of the run's successful steps with a p99 in turn, scaled by seeded
    log-normal noise (``sigma`` in log units), drawn apart for throughput and latency.

    Two seeds give two runs of the same code, so every change between them is chance. The noise
    is keyed by seed, level and repeat only, so the outcome does not depend on which steps the
    real run managed to measure (a loaded machine fails some).
    """
    sources = [r for r in read_rows(run_dir) if successful(r) and r["latency_p99_ms"] and r["repeat"] == "1"]
    rows: list[Row] = []
    for i in range(levels):
        for r in range(1, n + 1):
            rng = random.Random(f"{seed}/{i}/{r}")
            rps, latency = math.exp(rng.gauss(0, sigma)), math.exp(rng.gauss(0, sigma))
            new = scaled(sources[i % len(sources)], rps=rps, latency=latency)
            new.update(mode="closed", concurrency=str(i + 1), offered_rps="", repeat=str(r), step_id=f"noise{i}/{r}")
            rows.append(new)
    with (run_dir / CSV_NAME).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def successful(row: Row) -> bool:
    return row["verification"] == "pass" and bool(row["rps"])


def with_copies(run_dir: Path, copies: dict[str, tuple[str, float]]) -> None:
    """Adds targets as copies of measured ones with throughput scaled: ``{new: (source, factor)}``,
    e.g. the matrix's bare and idiomatic apps from the core apps, with a known ratio to each."""

    def add(row: Row) -> list[Row]:
        extra = []
        for new, (source, factor) in copies.items():
            if row["target"] == source:
                copy = scaled(row, rps=factor, latency=1 / factor)
                copy.update(target=new, step_id=f"{row.get('step_id', '')}@{new}")
                extra.append(copy)
        return [row, *extra]

    rewrite_rows(run_dir, add)
