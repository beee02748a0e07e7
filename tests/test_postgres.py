"""Which PostgreSQL native mode runs, and whether it says so truthfully.

The search order is a file-system search, so it is tested on real directories holding stub
executables; everything about a server (its version, its pg_stat_statements) is tested on real
servers started by ``NativeLab``: Debian's under /usr/lib/postgresql and the pgserver wheel's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from helpers import BARE_PATH, debian_server, pgserver_bindir

from benchlab.errors import BenchlabError
from benchlab.harness import NativeLab
from benchlab.postgres import ENV_BINDIR, Bindir, distribution_bindirs, find_bindir


def stub(path: Path, text: str = "exit 1") -> Path:
    """An executable shell script: what the search looks at, nothing it could run as a server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def stub_bindir(path: Path, names: tuple[str, ...] = ("postgres", "initdb")) -> Path:
    for name in names:
        stub(path / name)
    return path


def test_distribution_dirs_newest_version_first(tmp_path: Path) -> None:
    for version in ("9.6", "10", "16", "15", "16.1"):
        (tmp_path / version / "bin").mkdir(parents=True)
    (tmp_path / "17").mkdir()  # a version without bin/ (a removed package's leftovers)
    (tmp_path / "common" / "bin").mkdir(parents=True)  # not a version
    assert distribution_bindirs(tmp_path) == [tmp_path / v / "bin" for v in ("16.1", "16", "15", "10", "9.6")]
    assert distribution_bindirs(tmp_path / "absent") == []


def test_search_order_override_path_pg_config_distribution_pgserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every source present; each removed in turn hands over to the next."""
    override = stub_bindir(tmp_path / "override")
    on_path = stub_bindir(tmp_path / "own" / "bin")
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "postgres").symlink_to(on_path / "postgres")  # as /usr/local/bin links to the real one
    configured = stub_bindir(tmp_path / "configured" / "bin")
    stub(path_dir / "pg_config", f'[ "$1" = --bindir ] && echo "{configured}"')
    dists = tmp_path / "lib-postgresql"
    for version in ("9.6", "16", "10"):
        stub_bindir(dists / version / "bin")
    stub_bindir(dists / "17" / "bin", names=("postgres",))  # no initdb: not a server to use

    def found() -> Bindir:
        return find_bindir(path=str(path_dir), distributions=dists)

    monkeypatch.setenv(ENV_BINDIR, str(override))
    assert found() == Bindir(override.resolve(), ENV_BINDIR)
    monkeypatch.delenv(ENV_BINDIR)
    assert found() == Bindir(on_path.resolve(), "PATH")
    (on_path / "initdb").unlink()
    assert found() == Bindir(configured, "pg_config")
    (configured / "postgres").chmod(0o644)  # not executable
    assert found() == Bindir(dists / "16" / "bin", "distribution")
    (path_dir / "pg_config").unlink()
    for version in ("9.6", "16", "10"):
        (dists / version / "bin" / "initdb").unlink()
    assert found() == Bindir(pgserver_bindir(), "pgserver")


@pytest.mark.parametrize("kind", ["empty", "missing", "initdb only"])
def test_override_without_a_server_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    bindir = tmp_path / "bin"
    if kind != "missing":
        bindir.mkdir()
    if kind == "initdb only":
        stub(bindir / "initdb")
    monkeypatch.setenv(ENV_BINDIR, str(bindir))
    with pytest.raises(BenchlabError) as err:
        find_bindir()
    message = str(err.value)
    assert "\n" not in message and ENV_BINDIR in message and str(bindir) in message, message


def binary_version(bindir: Path) -> str:
    """``postgres --version``: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
    assert match, out.stdout
    return match.group(1)


def available(dsn: str, extension: str) -> bool:
    """What the running server itself offers."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = %s", (extension,)).fetchone()
    return row == (1,)


def test_without_postgres_on_path_the_distribution_server_runs_with_query_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bindir = debian_server()
    monkeypatch.delenv(ENV_BINDIR, raising=False)
    monkeypatch.setenv("PATH", BARE_PATH)
    logged: list[str] = []
    with NativeLab([], log=logged.append) as lab:
        assert lab.postgres is not None
        assert lab.database_info == {
            "version": binary_version(bindir),
            "bindir": str(bindir),
            "source": "distribution",
            "pg_stat_statements": True,
        }
        assert available(lab.dsn, "pg_stat_statements")
        with psycopg.connect(lab.dsn, connect_timeout=5) as conn:
            conn.execute("SELECT count(*) FROM world").fetchone()
            assert conn.execute("SELECT count(*) > 0 FROM pg_stat_statements").fetchone() == (True,)
    assert not any("pg_stat_statements" in line for line in logged), logged
    assert lab.database_info["source"] == "distribution"  # still there for run.json after stop


def test_the_pgserver_wheel_runs_without_query_counts_and_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision follows the server: the wheel's has no pg_stat_statements, however it was chosen."""
    bindir = pgserver_bindir()
    monkeypatch.setenv(ENV_BINDIR, str(bindir))
    logged: list[str] = []
    with NativeLab([], log=logged.append) as lab:
        assert lab.database_info == {
            "version": binary_version(bindir),
            "bindir": str(bindir),
            "source": ENV_BINDIR,
            "pg_stat_statements": False,
        }
        assert not available(lab.dsn, "pg_stat_statements")
    warnings = [line for line in logged if "pg_stat_statements" in line]
    assert len(warnings) == 1, logged
    assert "query counts will not be verified" in warnings[0] and "postgresql package" in warnings[0]
