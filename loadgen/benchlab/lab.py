"""Where the lab is: started here (``--native``) or running elsewhere (compose, other hosts).

The commands open a lab, and the runner measures whatever it is given; this module is the only
place that knows the difference: which database to verify against, whose processes can be
sampled, and how long to wait for targets that someone else starts.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import Any

import httpx
import psutil
from psycopg.conninfo import conninfo_to_dict

from benchlab.config.settings import settings
from benchlab.cpus import RoleCpus
from benchlab.errors import BenchlabError
from benchlab.metadata import database_info
from benchlab.model.level import Axes
from benchlab.sampling import process_tree
from benchlab.targets import DEFAULT_SELECTION, Target, load_targets

# Compose starts every target of the active profiles at once and the loadgen only after the core
# ones are healthy, so a started group is listening by then; this is the slack it gets.
STARTED_GRACE_S = 10.0


@dataclass
class Lab:
    """Where the targets are and what can be sampled: native (started here) or external."""

    targets: list[Target]
    dsn: str | None
    db_processes: Callable[[], list[psutil.Process]] | None
    mode: str
    database: dict[str, Any]  # what run.json records of the database (metadata.database_info)
    setup: Axes = field(default_factory=Axes)  # the swept axes' values the targets run with now
    restart: Callable[[Axes], dict[str, str]] | None = None  # the targets again with another setup (native)
    refused: dict[str, str] = field(default_factory=dict)  # targets that cannot run on this setup, and why
    annotate: Callable[[dict[str, Any]], None] | None = None  # adds what this lab knows to run.json
    upstream_url: str | None = None  # the upstream service (benchlab's own upstream test), if known

    def apply(self, setup: Axes) -> None:
        """Restarts the targets with ``setup`` unless they run so already."""
        if setup == self.setup:
            return
        if self.restart is None:
            raise BenchlabError(f"sweeping {', '.join(setup.swept)} restarts the targets, which only a native lab "
                                "can: add --native")  # fmt: skip
        self.refused = self.restart(setup)
        self.setup = setup


@contextmanager
def open_lab(
    args: argparse.Namespace, targets: list[Target], cpus: RoleCpus, ready_timeout_s: str = "120",
    setup: Axes | None = None,
) -> Iterator[Lab]:
    """Starts the lab (``--native``, its targets with ``setup``; or on Docker hosts: ``--hosts``)
    or waits, bounded, for targets running elsewhere."""
    if getattr(args, "host_specs", None):
        from benchlab.hosts.lab import hosts_lab

        with hosts_lab(args, targets) as lab:
            yield lab
        return
    if args.native:
        from benchlab.harness import NativeLab

        setup = setup or Axes()
        with NativeLab(targets, cpus=cpus, setup=setup) as native:
            assert native.postgres is not None
            yield Lab(targets, native.dsn, native.postgres.processes, "native", dict(native.database_info or {}),
                      setup=setup, restart=native.restart_targets, refused=native.refused,
                      upstream_url=native.upstream.url if native.upstream else None)  # fmt: skip
        return
    wait_ready(targets, settings().ready_timeout_s or float(ready_timeout_s))
    db_processes: Callable[[], list[Any]] | None = None
    if settings().sample_db_on_host and args.dsn:
        db_processes = partial(host_postgres, str(conninfo_to_dict(args.dsn).get("port") or "5432"))
    elif settings().db_stats_url:  # the loadgen of a split run (hosts.remote): the database's host answers
        from benchlab.hosts.stats import EndpointCpu

        db_processes = EndpointCpu(settings().db_stats_url)
    mode = settings().mode
    yield Lab(targets, args.dsn, db_processes, mode, database_info(args.dsn), upstream_url=settings().upstream_url)


def choose_targets(
    names: list[str], overrides: dict[str, str], native: bool, log: Callable[[str], None] = print
) -> list[Target]:
    """The targets ``names`` selects (default: the core group). In compose with nothing named,
    also every group started beside it (``docker compose --profile matrix|GROUP up``): the
    loadgen cannot wait for those through depends_on, so it looks for them."""
    if names or native or settings().mode != "compose":
        return load_targets(names, overrides)
    every = load_targets(["all"], overrides)
    others = [t for t in every if t.group != DEFAULT_SELECTION]
    started = started_groups(others, STARTED_GRACE_S)
    idle = sorted({t.group for t in others} - started)
    if started:
        log(f"measuring the {', '.join(sorted(started))} group(s) too: their targets were started")
    if idle:
        log(f"not started: {', '.join(idle)} (docker compose --profile matrix up starts every group)")
    return [t for t in every if t.group == DEFAULT_SELECTION or t.group in started]


def started_groups(targets: list[Target], grace_s: float) -> set[str]:
    """The groups with a target accepting connections within ``grace_s``; one is enough, since
    a profile starts its whole group (wait_ready then waits for each target)."""
    found: set[str] = set()
    deadline = time.monotonic() + grace_s
    while True:
        for t in targets:
            if t.group not in found and _listening(t):
                found.add(t.group)
        if found == {t.group for t in targets} or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _listening(target: Target) -> bool:
    url = httpx.URL(target.url)
    try:
        socket.create_connection((url.host, url.port or 80), timeout=0.5).close()
        return True
    except OSError:
        return False


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
