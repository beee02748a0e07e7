"""Shared fixtures: the real lab (Postgres + the three targets) started by the project's harness."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TEST_TARGETS, only_run_dir, run_benchlab

from benchlab.baseline import BaselineServer
from benchlab.harness import NativeLab
from benchlab.targets import Target, load_targets


@pytest.fixture(scope="session")
def lab() -> Iterator[NativeLab]:
    """Postgres and every target (all groups), started once for the session as `benchlab up
    --native --targets all` does: every target meets the whole contract."""
    with NativeLab(load_targets(TEST_TARGETS)) as running:
        yield running


@pytest.fixture(params=[t.name for t in load_targets(TEST_TARGETS)])
def target(request: pytest.FixtureRequest, lab: NativeLab) -> Target:
    """Each target in turn, running in the session's lab."""
    return lab.running[request.param].target


# Ports for a native run started while the session lab holds its own: the session's + 10000.
NATIVE_RUN_PORTS = {f"BENCHLAB_PORT_{t.env_key}": str(t.port + 10000) for t in load_targets(["all"])}


@pytest.fixture(scope="session")
def smoke_native(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`benchlab run --native --scenario smoke`: its own Postgres and targets, as a new user runs it."""
    out = tmp_path_factory.mktemp("smoke-native")
    proc = run_benchlab("run", "--native", "--scenario", "smoke", "--out", str(out), env=NATIVE_RUN_PORTS)
    return only_run_dir(out), proc


@pytest.fixture(scope="session")
def smoke_run(smoke_native: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    """A real run directory of the smoke scenario."""
    return smoke_native[0]


@pytest.fixture(scope="session")
def smoke_runs(smoke_run: Path, lab: NativeLab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real smoke runs: the native one, and one against the session's lab (external mode)."""
    out = tmp_path_factory.mktemp("smoke-external")
    proc = run_benchlab("run", "--scenario", "smoke", "--dsn", lab.dsn, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return smoke_run, only_run_dir(out)


@pytest.fixture(scope="module")
def baseline() -> Iterator[BaselineServer]:
    """The lab's trivial server (one worker), for engine and sampler tests."""
    with BaselineServer(workers=1) as server:
        yield server
