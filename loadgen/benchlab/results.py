"""The results of a run on disk: ``results.csv`` (one row per measured step), ``run.json``, ``raw/``.

``COLUMNS`` is the one definition of the CSV; the README documents it. Rows are appended
and flushed when a step ends, so an interrupted run always leaves a valid CSV.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from benchlab.errors import BenchlabError

COLUMNS: tuple[str, ...] = (
    "run_id", "target", "framework", "server", "workers", "test", "mode", "concurrency",
    "pipeline", "queries", "repeat", "offered_rps", "duration_s", "requests", "rps",
    "latency_mean_ms", "latency_stdev_ms", "latency_p50_ms", "latency_p75_ms",
    "latency_p90_ms", "latency_p99_ms", "latency_p999_ms", "latency_p9999_ms",
    "latency_max_ms", "errors_connect", "errors_read", "errors_write", "errors_timeout",
    "errors_status", "dropped", "server_cpu_cores", "server_pss_mb", "server_rss_mb", "db_cpu_cores",
    "loadgen_cpu_cores", "client_bound", "overloaded", "verification", "started_at", "finished_at", "step_id",
)  # fmt: skip

# Columns added after runs were first recorded: an older CSV without them reads as empty cells.
LATER_COLUMNS: frozenset[str] = frozenset({"overloaded", "server_pss_mb"})

CSV_NAME = "results.csv"
RUN_JSON = "run.json"
RAW_DIR = "raw"


class ResultsWriter:
    """Appends complete rows to ``results.csv``; each row is written and fsynced in one go."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / CSV_NAME
        try:
            (run_dir / RAW_DIR).mkdir(parents=True, exist_ok=True)
            _drop_partial_line(self.path)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._fh = self.path.open("a", newline="", encoding="utf-8")
        except OSError as exc:
            raise BenchlabError(f"cannot write results to {run_dir}: {exc.strerror}") from exc
        self._csv = csv.DictWriter(self._fh, fieldnames=COLUMNS, extrasaction="raise")
        if new:
            self._csv.writeheader()
            self._flush()

    def write(self, row: Mapping[str, Any]) -> None:
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"result row lacks columns: {sorted(missing)}")
        self._csv.writerow({k: _cell(row[k]) for k in COLUMNS})
        self._flush()

    def _flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_line(path: Path) -> None:
    """A row cut off by a hard kill (power loss, SIGKILL mid-write) is removed before appending."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else ""
    return value


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV; a missing file or missing columns is a user error."""
    path = run_dir / CSV_NAME
    if not path.is_file():
        raise BenchlabError(f"{run_dir} is not a benchlab run: no {CSV_NAME}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if set(missing) - LATER_COLUMNS:
            raise BenchlabError(f"{path}: missing columns {', '.join(missing)}")
        return [{**dict.fromkeys(missing, ""), **row} for row in reader]


def iter_done_steps(run_dir: Path) -> Iterator[str]:
    """``step_id`` of every step already recorded, for ``--resume``."""
    if (run_dir / CSV_NAME).exists():
        for row in read_rows(run_dir):
            yield row["step_id"]


def write_run_json(run_dir: Path, meta: Mapping[str, Any]) -> None:
    """Writes ``run.json`` atomically (temp file + rename), so it is never half-written."""
    tmp = run_dir / (RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(run_dir / RUN_JSON)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise BenchlabError(f"{run_dir} is not a benchlab run: no {RUN_JSON}")
    return json.loads(path.read_text())
