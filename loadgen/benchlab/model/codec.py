"""``results.csv``: the one mapping between a ``Step`` and a CSV row, both ways.

``COLUMNS`` is the one definition of the CSV; the README documents it. Each row carries the
``format`` it was written in (``FORMAT_VERSION``); a CSV from before the stamp (format 1) lacks
the later columns and reads as if they were empty. Rows are appended and fsynced when a step
ends, so an interrupted run always leaves a valid CSV; a write that fails (a full disk, an I/O
error) is undone to the last whole row and becomes one ``BenchlabError``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from benchlab.errors import BenchlabError
from benchlab.measurement import ERROR_COLUMNS, LATENCY_COLUMNS
from benchlab.model.level import AXIS_FIELDS, AXIS_TYPES, Axes, Level
from benchlab.model.modes import LoadMode
from benchlab.model.status import StepStatus
from benchlab.model.step import RESOURCE_COLUMNS, Step

FORMAT_VERSION = 2  # 2: the axes columns (cpus, python, python_build) and this stamp; 1: none
# (upstream_cpu_cores, upstream_bound and profiler_overhead came before the stamp: later columns of 1)
CSV_NAME = "results.csv"
RAW_DIR = "raw"

COLUMNS: tuple[str, ...] = (
    "run_id", "target", "framework", "server", "workers", "test", "mode", "concurrency",
    "pipeline", "queries", "repeat", "offered_rps", "duration_s", "requests", "rps",
    *LATENCY_COLUMNS, *ERROR_COLUMNS, "dropped", "server_cpu_cores", "server_pss_mb", "server_rss_mb", "db_cpu_cores",
    "loadgen_cpu_cores", "client_bound", "upstream_cpu_cores", "upstream_bound", "overloaded", "profiler_overhead",
    "verification", "started_at", "finished_at", "step_id",
    *(a for a in AXIS_FIELDS if a != "workers"), "format",
)  # fmt: skip

# Columns added after runs were first recorded: an older CSV without them reads as empty cells.
LATER_COLUMNS: frozenset[str] = frozenset(
    {"overloaded", "server_pss_mb", "upstream_cpu_cores", "upstream_bound", "profiler_overhead", *AXIS_FIELDS, "format"}
    - {"workers"}
)


def encode(step: Step) -> dict[str, str]:
    """The step as one CSV row (every column, text)."""
    row: dict[str, Any] = {
        "run_id": step.run_id, "target": step.target, "framework": step.framework, "server": step.server,
        "test": step.test, "mode": str(step.mode), "repeat": step.repeat, "requests": step.requests,
        "duration_s": step.duration_s, "rps": step.rps, "dropped": step.dropped, "client_bound": step.client_bound,
        "upstream_bound": step.upstream_bound, "profiler_overhead": step.profiler_overhead,
        "overloaded": step.overloaded, "verification": str(step.status), "started_at": step.started_at,
        "finished_at": step.finished_at, "step_id": step.step_id, "format": FORMAT_VERSION,
        **{d: step.level.value(d) for d in ("concurrency", "pipeline", "queries", "offered_rps")},
        **{a: step.axes.value(a) for a in AXIS_FIELDS},
        **step.latency, **step.errors_by_kind, **step.resources,
    }  # fmt: skip
    return {c: _cell(row.get(c)) for c in COLUMNS}


def decode(row: Mapping[str, str], line: int) -> Step:
    """A CSV row (of any format up to ``FORMAT_VERSION``) as a step; a bad number names its line."""

    def num(column: str) -> float | None:
        raw = (row.get(column) or "").strip()
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            raise BenchlabError(f"{CSV_NAME} line {line}: {column} {raw!r} is not a number") from None

    def whole(column: str) -> int | None:
        value = num(column)
        return None if value is None else int(value)

    def flag(column: str) -> bool | None:
        raw = (row.get(column) or "").strip().lower()
        return None if not raw else raw == "true"

    version = whole("format") or 1
    if version > FORMAT_VERSION:
        raise BenchlabError(
            f"{CSV_NAME} line {line}: written in format {version}, this benchlab reads up to {FORMAT_VERSION}: "
            "upgrade benchlab"
        )
    axes = {a: whole(a) if AXIS_TYPES[a] is int else ((row.get(a) or "").strip() or None) for a in AXIS_FIELDS}
    return Step(
        run_id=row.get("run_id") or "", target=row["target"], framework=row.get("framework") or "",
        server=row.get("server") or "", test=row["test"], mode=LoadMode.parse(row.get("mode")),
        level=Level(whole("concurrency"), whole("pipeline"), whole("queries"), num("offered_rps")),
        axes=Axes(**axes),
        repeat=whole("repeat") or 1, status=StepStatus.parse(row.get("verification") or ""),
        step_id=row.get("step_id") or "", started_at=row.get("started_at") or "",
        finished_at=row.get("finished_at") or "", requests=whole("requests"), duration_s=num("duration_s"),
        rps=num("rps"), latency={c: num(c) for c in LATENCY_COLUMNS},
        errors_by_kind={c: whole(c) for c in ERROR_COLUMNS}, dropped=whole("dropped"),
        overloaded=flag("overloaded"), resources={c: num(c) for c in RESOURCE_COLUMNS},
        client_bound=flag("client_bound"), upstream_bound=flag("upstream_bound"),
        profiler_overhead=num("profiler_overhead"),
    )  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else ""
    return str(value)


class ResultsWriter:
    """Appends complete rows to ``results.csv``; each row is written and fsynced in one go, or
    not at all: unbuffered, so that a failed write leaves nothing queued to land later. A run
    resumed from an older format is first rewritten in this one (its rows, new columns empty)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / CSV_NAME
        try:
            (run_dir / RAW_DIR).mkdir(parents=True, exist_ok=True)
            _drop_partial_line(self.path)
            _upgrade(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size  # where the last whole row ends
        except OSError as exc:
            raise BenchlabError(f"cannot write results to {run_dir}: {exc.strerror}") from exc
        if self._size == 0:
            self._append(dict(zip(COLUMNS, COLUMNS, strict=True)))

    def write(self, step: Step) -> None:
        self._append(encode(step))

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


def _upgrade(path: Path) -> None:
    """An older CSV rewritten with today's columns, atomically, so resumed rows line up."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    if tuple(header) == COLUMNS:
        return
    steps = read_steps(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for step in steps:
            writer.writerow({**encode(step), "format": 1})  # still what it was written as
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_rows(run_dir: Path, *, warn: bool = True) -> list[dict[str, str]]:
    """The rows of a run's CSV as text, every column present; a missing file or missing columns
    is a user error. ``warn``: say so when the last row is cut off (once per reading of a run:
    a second reader passes False)."""
    path = run_dir / CSV_NAME
    if not path.is_file():
        raise BenchlabError(f"{run_dir} is not a benchlab run: no {CSV_NAME}")
    with path.open(newline="", encoding="utf-8") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):  # a hard kill mid-write; the writer drops it on --resume
        if warn:
            print(f"benchlab: warning: {path}: the last row is cut off mid-write and is left out",
                  file=sys.stderr, flush=True)  # fmt: skip
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if set(missing) - LATER_COLUMNS:
        raise BenchlabError(f"{path}: missing columns {', '.join(missing)}")
    return [{**dict.fromkeys(missing, ""), **row} for row in reader]


def read_steps(run_dir: Path, *, warn: bool = True) -> list[Step]:
    """Every recorded step of a run, in CSV order."""
    return [decode(row, n) for n, row in enumerate(read_rows(run_dir, warn=warn), start=2)]


def iter_done_steps(run_dir: Path) -> Iterator[str]:
    """``step_id`` of every step already recorded, for ``--resume``."""
    if (run_dir / CSV_NAME).exists():
        for step in read_steps(run_dir):
            yield step.step_id
