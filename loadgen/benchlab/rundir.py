"""A run directory: ``run.json``, the scenario as run, beside ``results.csv`` and ``raw/``
(``model.codec``). ``run.json`` is replaced only by a complete new copy, so the last good one stays."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlab.errors import BenchlabError

SCENARIO_COPY = "scenario.yaml"  # the scenario as run, beside its results (what --resume reads)
RUN_JSON = "run.json"


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
