"""Where the lab is: started here (``--native``) or running elsewhere (compose, other hosts).

The commands open a lab, and the runner measures whatever it is given; this module is the only
place that knows the difference: which database to verify against, whose processes can be
sampled, and how long to wait for targets that someone else starts.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any

import psutil
from psycopg.conninfo import conninfo_to_dict

from benchlab.cpus import RoleCpus
from benchlab.errors import BenchlabError
from benchlab.metadata import database_info
from benchlab.sampling import process_tree
from benchlab.targets import Target


@dataclass
class Lab:
    """Where the targets are and what can be sampled: native (started here) or external."""

    targets: list[Target]
    dsn: str | None
    db_processes: Callable[[], list[psutil.Process]] | None
    mode: str
    database: dict[str, Any]  # what run.json records of the database (metadata.database_info)


@contextmanager
def open_lab(
    args: argparse.Namespace, targets: list[Target], cpus: RoleCpus, ready_timeout_s: str = "120"
) -> Iterator[Lab]:
    """Starts the lab (``--native``) or waits, bounded, for targets running elsewhere."""
    if args.native:
        from benchlab.harness import NativeLab

        with NativeLab(targets, cpus=cpus, workers=args.workers) as native:
            assert native.postgres is not None
            yield Lab(targets, native.dsn, native.postgres.processes, "native", dict(native.database_info or {}))
        return
    wait_ready(targets, float(os.environ.get("BENCHLAB_READY_TIMEOUT", ready_timeout_s)))
    db_processes = None
    if os.environ.get("BENCHLAB_SAMPLE_DB") == "host" and args.dsn:
        db_processes = partial(host_postgres, str(conninfo_to_dict(args.dsn).get("port") or "5432"))
    mode = os.environ.get("BENCHLAB_MODE", "external")
    yield Lab(targets, args.dsn, db_processes, mode, database_info(args.dsn))


def host_postgres(port: str) -> list[psutil.Process]:
    """The Postgres serving ``port`` and its backends, among the processes we can see (compose
    gives the loadgen the host's PID namespace; other Postgres servers there are not ours)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] in ("postgres", "postmaster") and _serves_port(cmd, port):
            return process_tree(proc.pid)
    return []


def _serves_port(cmdline: list[str], port: str) -> bool:
    return f"port={port}" in cmdline or any(a == "-p" and b == port for a, b in pairwise(cmdline))


def wait_ready(targets: list[Target], timeout_s: float) -> None:
    """Bounded wait until each target answers ``/json``; a dead one is a clear error."""
    deadline = time.monotonic() + timeout_s
    for t in targets:
        while not t.answers():
            if time.monotonic() > deadline:
                raise BenchlabError(
                    f"target {t.name} at {t.url} did not become ready within {timeout_s:.0f} s"
                )
            time.sleep(0.5)
