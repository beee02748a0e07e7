"""What a step's row says about it: one typed status with its reason kept apart, and the one
rule for which rows are measurements.

The CSV keeps the status and its reason in one ``verification`` cell (``warn: no DSN``), as it
always has; everything that reads or writes that cell goes through ``StepStatus``. Reports,
peaks, charts, claims, compare and the run's exit code all ask ``measured``, so a warned step
counts everywhere and a step that only collected errors counts nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from benchlab.measurement import Measurement


class Status(StrEnum):
    PASS = "pass"  # verified, measured
    WARN = "warn"  # measured; verification could not check everything (the reason says what)
    INVALID = "invalid"  # the engine ran, but too many requests failed: figures kept, not a measurement
    FAIL = "fail"  # failed verification: not load-tested
    ERROR = "error"  # the engine or the target failed: no figures
    SKIPPED = "skipped"  # not run (the reason says why)


MEASURED = frozenset({Status.PASS, Status.WARN})

# A step is a measurement only while failed requests (socket errors and non-2xx/3xx) stay at or
# below this share of all attempts: a server answering 503s fast is not serving the test.
MAX_ERROR_SHARE = 0.01


@dataclass(frozen=True)
class StepStatus:
    status: Status
    reason: str = ""

    @classmethod
    def parse(cls, text: str) -> StepStatus:
        """``"warn: no DSN"`` -> (WARN, "no DSN"); an empty or unknown cell is an error status."""
        head, _, reason = (text or "").strip().partition(":")
        try:
            return cls(Status(head.strip()), reason.strip())
        except ValueError:
            return cls(Status.ERROR, f"unrecognised status {text!r}")

    @property
    def measured(self) -> bool:
        return self.status in MEASURED

    def __str__(self) -> str:
        text = f"{self.status}: {self.reason}" if self.reason else str(self.status)
        return text[:500]


def judge(verdict: StepStatus, m: Measurement) -> StepStatus:
    """The status of a finished engine run: its verification verdict, unless the run itself
    shows that the server did not serve the test (no good response, or too many failures)."""
    if not verdict.measured:
        return verdict
    failed = m.socket_errors + m.errors_status
    attempts = m.requests + m.socket_errors
    good = m.requests - m.errors_status
    if good <= 0:
        return StepStatus(Status.INVALID, f"no successful response ({failed} failed requests)")
    if failed > MAX_ERROR_SHARE * attempts:
        share = 100 * failed / attempts
        return StepStatus(
            Status.INVALID, f"{failed} of {attempts} requests failed ({share:.1f} % > {100 * MAX_ERROR_SHARE:g} %)"
        )
    return verdict
