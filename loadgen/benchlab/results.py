"""The results of a run on disk: ``results.csv`` (one row per measured step), ``run.json``, ``raw/``.

``COLUMNS`` is the one definition of the CSV; the README documents it. Rows are appended
and flushed when a step ends, so an interrupted run always leaves a valid CSV. A write that
fails (a full disk, an I/O error) is undone to the last whole row and becomes one
``BenchlabError``; ``run.json`` is replaced only by a complete new copy, so the last good one stays.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlab.errors import BenchlabError
from benchlab.measurement import ERROR_COLUMNS, LATENCY_COLUMNS

COLUMNS: tuple[str, ...] = (
    "run_id", "target", "framework", "server", "workers", "test", "mode", "concurrency",
    "pipeline", "queries", "repeat", "offered_rps", "duration_s", "requests", "rps",
    *LATENCY_COLUMNS, *ERROR_COLUMNS, "dropped", "server_cpu_cores", "server_pss_mb", "server_rss_mb", "db_cpu_cores",
    "loadgen_cpu_cores", "client_bound", "upstream_cpu_cores", "upstream_bound", "overloaded", "profiler_overhead",
    "verification", "started_at", "finished_at", "step_id",
)  # fmt: skip

# Columns added after runs were first recorded: an older CSV without them reads as empty cells.
LATER_COLUMNS: frozenset[str] = frozenset(
    {"overloaded", "server_pss_mb", "upstream_cpu_cores", "upstream_bound", "profiler_overhead"}
)

# How a step loads its target: closed loop (wrk), open loop (k6), or closed loop with py-spy
# attached (``--profile``), whose figures describe the profile and never count as a measurement.
CLOSED, OPEN, PROFILED = "closed", "open", "profiled"
MODES: tuple[str, ...] = (CLOSED, OPEN, PROFILED)
COUNTED_MODES: tuple[str, ...] = (CLOSED, OPEN)

CSV_NAME = "results.csv"
SCENARIO_COPY = "scenario.yaml"  # the scenario as run, beside its results (what --resume reads)
RUN_JSON = "run.json"
RAW_DIR = "raw"


class ResultsWriter:
    """Appends complete rows to ``results.csv``; each row is written and fsynced in one go, or
    not at all: unbuffered, so that a failed write leaves nothing queued to land later."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / CSV_NAME
        try:
            (run_dir / RAW_DIR).mkdir(parents=True, exist_ok=True)
            _drop_partial_line(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size  # where the last whole row ends
        except OSError as exc:
            raise BenchlabError(f"cannot write results to {run_dir}: {exc.strerror}") from exc
        if self._size == 0:
            self._append(dict(zip(COLUMNS, COLUMNS, strict=True)))

    def write(self, row: Mapping[str, Any]) -> None:
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"result row lacks columns: {sorted(missing)}")
        self._append({k: _cell(row[k]) for k in COLUMNS})

    def _append(self, row: Mapping[str, Any]) -> None:
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="raise").writerow(row)
        data = text.getvalue().encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no torn row: the file ends with the last whole one
            raise BenchlabError(f"cannot write results to {self.path}: {exc.strerror}") from exc
        self._size += len(data)

    def close(self) -> None:
        os.close(self._fd)

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
        os.truncate(path, data.rfind(b"\n") + 1)  # in place: needs no free space


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else ""
    return value


def read_rows(run_dir: Path, *, warn: bool = True) -> list[dict[str, str]]:
    """The rows of a run's CSV; a missing file or missing columns is a user error. ``warn``:
    say so when the last row is cut off (once per reading of a run: a second reader passes False)."""
    path = run_dir / CSV_NAME
    if not path.is_file():
        raise BenchlabError(f"{run_dir} is not a benchlab run: no {CSV_NAME}")
    with path.open(newline="", encoding="utf-8") as fh:
        text = fh.read()
    if text and not text.endswith("\n") and warn:  # a hard kill mid-write; the writer drops it on --resume
        print(f"benchlab: warning: {path}: the last row is cut off mid-write and is left out",
              file=sys.stderr, flush=True)  # fmt: skip
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
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
    """Writes ``run.json`` atomically (temp file, fsync, rename), so it is never half-written;
    when that fails the temp file goes and the previous ``run.json`` stays as it was."""
    tmp = run_dir / (RUN_JSON + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(run_dir / RUN_JSON)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise BenchlabError(f"cannot write {run_dir / RUN_JSON}: {exc.strerror}") from exc


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise BenchlabError(f"{run_dir} is not a benchlab run: no {RUN_JSON}")
    return json.loads(path.read_text())


def check_out_dir(out: Path) -> None:
    """Fail before anything starts when results could not be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchlabError(f"cannot create the results directory {out}: {exc.strerror}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise BenchlabError(f"cannot write to the results directory {out}")


def new_run_dir(out: Path, scenario_name: str, scenario_yaml: str) -> tuple[Path, str]:
    """``out/<UTC time>-<scenario>`` (with the pid when that exists already), holding the scenario."""
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{scenario_name}"
    run_dir = out / run_id
    if run_dir.exists():
        run_id += f"-{os.getpid()}"
        run_dir = out / run_id
    run_dir.mkdir(parents=True)
    (run_dir / SCENARIO_COPY).write_text(scenario_yaml)
    return run_dir, run_id
