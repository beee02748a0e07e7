"""CPU sets per role (targets, database, upstream, loadgen): parsed, checked and recorded.

The same ``BENCHLAB_CPUS_*`` variables drive compose's ``cpuset`` and the native harness's
affinity, so every run records what each role was given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError

ROLES = ("targets", "db", "upstream", "loadgen")


def available() -> set[int]:
    """CPUs this process may run on (what an unpinned role gets)."""
    return set(os.sched_getaffinity(0))


def online() -> set[int]:
    """CPUs the machine has online: a role may be pinned to any of them, not only to ours."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return set(range(os.cpu_count() or 1))
    return cpuset_cpus(text)


def parse_cpuset(text: str, what: str = "cpuset") -> set[int]:
    """``"0-2,5"`` -> ``{0, 1, 2, 5}``; names of CPUs this machine lacks are a user error."""
    try:
        cpus = cpuset_cpus(text)
    except ValueError:
        raise BenchlabError(f"{what}: {text!r} is not a cpuset like '0-3' or '0,2'") from None
    if not cpus:
        raise BenchlabError(f"{what}: empty cpuset")
    missing = cpus - online()
    if missing:
        raise BenchlabError(
            f"{what}: {text!r} names CPUs this machine does not have (online: {format_cpuset(online())})"
        )
    return cpus


def cpuset_cpus(text: str) -> set[int]:
    """``"0-2,5"`` -> ``{0, 1, 2, 5}``, unchecked against this machine (a recorded run may come from
    another host); ValueError when it is not a cpuset."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if first < 0 or last < first:
            raise ValueError(part)
        cpus.update(range(first, last + 1))
    return cpus


def format_cpuset(cpus: set[int] | list[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"``."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(_span(run))
            run = []
        run.append(c)
    if run:
        out.append(_span(run))
    return ",".join(out)


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


@dataclass(frozen=True)
class RoleCpus:
    """What each role may run on; None means "not pinned" (all CPUs)."""

    targets: set[int] | None = None
    db: set[int] | None = None
    upstream: set[int] | None = None
    loadgen: set[int] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RoleCpus:
        given = settings(env)
        values = {}
        for role in ROLES:
            raw = given.cpus(role)
            values[role] = parse_cpuset(raw, f"BENCHLAB_CPUS_{role.upper()}") if raw else None
        return cls(**values)

    def targets_set(self) -> set[int]:
        """The CPUs the targets may use (all of ours when not pinned)."""
        return self.targets or available()

    def describe(self) -> dict[str, str]:
        return {r: format_cpuset(getattr(self, r) or available()) for r in ROLES}


def check_workers(workers: tuple[int, ...], cpus: RoleCpus) -> None:
    """A workers value pins N workers to N of the targets' CPUs: more than the set has is refused."""
    have = cpus.targets_set()
    if workers and max(workers) > len(have):
        n = max(workers)
        raise BenchlabError(
            f"workers {n} needs {n} of the targets' CPUs but they have {len(have)} ({format_cpuset(have)}): "
            "lower the workers or give the targets more CPUs (BENCHLAB_CPUS_TARGETS)"
        )
