"""Shared fixtures: the real lab (Postgres + the three targets) started by the project's harness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchlab.harness import NativeLab
from benchlab.targets import Target, load_targets


@pytest.fixture(scope="session")
def lab() -> Iterator[NativeLab]:
    """Postgres and every target, started once for the session exactly as `benchlab up --native` does."""
    with NativeLab(load_targets()) as running:
        yield running


@pytest.fixture(params=[t.name for t in load_targets()])
def target(request: pytest.FixtureRequest, lab: NativeLab) -> Target:
    """Each target in turn, running in the session's lab."""
    return lab.running[request.param].target
