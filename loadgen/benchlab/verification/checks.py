"""The verdict for one target x test (``ContractCheck``), the table ``verify`` prints, and the
state every verification phase shares (``Verification``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from benchlab.contract import TestType, test_label, trim
from benchlab.model.status import Status
from benchlab.targets import Target

MAX_REASONS = 6


@dataclass
class ContractCheck:
    """The verdict for one target x test; ``reasons`` say what was expected and what came back."""

    target: str
    test: str
    status: Status = Status.PASS  # pass, warn or fail
    reasons: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.status = Status.FAIL
        self._add(reason)

    def warn(self, reason: str) -> None:
        if self.status is Status.PASS:
            self.status = Status.WARN
        self._add(reason)

    def _add(self, reason: str) -> None:
        reason = trim(reason, 200)
        if reason in self.reasons:
            return
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)
        elif len(self.reasons) == MAX_REASONS:
            self.reasons.append("(more problems not shown)")


def format_checks(checks: Iterable[ContractCheck]) -> str:
    """One line per target x test: status, target, test, reasons."""
    checks = list(checks)
    if not checks:
        return "no checks"
    tw = max(len(c.target) for c in checks)
    sw = max(len(test_label(c.test)) for c in checks)
    return "\n".join(
        f"{c.status.upper():<4}  {c.target:<{tw}}  {test_label(c.test):<{sw}}  {'; '.join(c.reasons)}".rstrip()
        for c in checks
    )


@dataclass
class Verification:
    """What every phase shares: the selected tests, the database handle and the verdicts."""

    specs: list[TestType]
    timeout_s: float
    db: psycopg.AsyncConnection[Any] | None
    db_problem: str | None
    checks: dict[tuple[str, str], ContractCheck]

    def check(self, target: Target, test: str) -> ContractCheck:
        return self.checks[(target.name, test)]
