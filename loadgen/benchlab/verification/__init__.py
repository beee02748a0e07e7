"""Checks every target x test against the TechEmpower contract (``shared/tfb-contract.md``).

The lab goes further than TFB's verifier: with a DSN, returned rows must equal the stored rows
and query counts must match exactly, and failures TFB only warns about (bad parameter handling,
extra JSON keys) fail here. Two deliberate shortcuts keep ``verify`` fast: TFB re-fetches every
URL 3 s later to prove ``Date`` is not cached; here that is done once per target (on its first
test's URL) and the verdict applies to all of its tests. Query counts use one 512-request burst
per URL, as TFB does.

What each test sends and expects is its ``contract.TestType``; this package only knows how to
ask and compare: ``responses`` (HTTP and header checks), ``database`` (stored rows),
``counts`` (pg_stat_statements) with ``burst`` (the 512 raw connections), ``verify`` (the
order of it all) and ``checks`` (the verdicts).
"""

from __future__ import annotations

from benchlab.verification.checks import ContractCheck, format_checks
from benchlab.verification.counts import NO_STATS
from benchlab.verification.database import NO_DSN
from benchlab.verification.verify import verify_targets

__all__ = ["NO_DSN", "NO_STATS", "ContractCheck", "format_checks", "verify_targets"]
