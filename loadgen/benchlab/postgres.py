"""A real, throwaway PostgreSQL for native runs, loaded from ``db/``.

Uses the ``initdb``/``postgres`` on PATH when present, otherwise the binaries bundled in the
``pgserver`` wheel. The server mirrors the db image: the benchmark role is the superuser
(as ``POSTGRES_USER`` makes it in the official image), ``db/postgresql.conf`` is included,
and the same SQL files are run. As root, Postgres runs as ``nobody`` (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from benchlab.errors import BenchlabError
from benchlab.sampling import process_tree

USER = os.environ.get("BENCHLAB_DB_USER", "benchmarkdbuser")
PASSWORD = os.environ.get("BENCHLAB_DB_PASSWORD", "benchmarkdbpass")
DATABASE = os.environ.get("BENCHLAB_DB_NAME", "hello_world")


def find_bindir() -> Path:
    """The directory holding initdb and postgres: PATH first, then the pgserver wheel."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(os.path.realpath(initdb)).parent
    try:
        import pgserver  # type: ignore[import-untyped]
    except ImportError as exc:
        raise BenchlabError(
            "no PostgreSQL found: install it (apt-get install postgresql) or `pip install pgserver`"
        ) from exc
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, what: str) -> None:
    """A clear error instead of a server failing later with EADDRINUSE."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BenchlabError(f"port {port} for {what} is already in use on 127.0.0.1") from exc


def _demote() -> tuple[Callable[[], None] | None, int | None, int | None]:
    """As root, run Postgres as ``nobody``; otherwise as ourselves."""
    if os.geteuid() != 0:
        return None, None, None
    pw = pwd.getpwnam("nobody")

    def preexec() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return preexec, pw.pw_uid, pw.pw_gid


@dataclass
class Postgres:
    """A running server; ``stop()`` shuts it down and deletes its data directory."""

    port: int
    root: Path
    process: subprocess.Popen[bytes]
    has_stat_statements: bool
    log_path: Path
    argv: list[str]
    preexec: Callable[[], None]
    _stopped: bool = field(default=False, repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its backends, for CPU sampling."""
        return process_tree(self.process.pid)

    def down(self) -> None:
        """Stops the server but keeps its data (the database-down tests bring it back)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def up(self, wait_s: float = 60) -> None:
        """Starts the server again on the same port and data."""
        if self.process.poll() is None:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec,
                start_new_session=True,
            )  # fmt: skip
        _wait_ready(self, wait_s)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.down()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(
    db_dir: Path,
    port: int | None = None,
    cpus: set[int] | None = None,
    wait_s: float = 60,
) -> Postgres:
    """initdb, start on 127.0.0.1, create the database and load ``db/*.sql``."""
    bindir = find_bindir()
    port = port or free_port()
    check_port_free(port, "PostgreSQL")
    preexec, uid, gid = _demote()
    root = Path(tempfile.mkdtemp(prefix="benchlab-pg-"))
    data = root / "data"
    log_path = root / "postgres.log"
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        for p in (root, pwfile):
            os.chown(p, uid, gid)  # type: ignore[arg-type]
        if not _reachable_by_others(bindir / "postgres"):
            bindir = _copy_pgserver(bindir, root)

    def run_as_pg() -> None:
        # the harness may start us with SIGINT/SIGTERM blocked; the server must receive them
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if cpus:
            os.sched_setaffinity(0, cpus)
        if preexec:
            preexec()

    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
             "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"],
            check=True, capture_output=True, preexec_fn=run_as_pg,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise BenchlabError(f"initdb failed: {exc.stderr.decode(errors='replace').strip()[-300:]}") from exc
    except OSError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise BenchlabError(f"cannot run {bindir / 'initdb'}: {exc.strerror}") from exc
    pwfile.unlink()

    sharedir = _sharedir(bindir)
    has_pss = (sharedir / "extension" / "pg_stat_statements.control").exists()
    conf = data / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write(f"\ninclude '{(db_dir / 'postgresql.conf').resolve()}'\n")
        fh.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n")
        if not has_pss:
            fh.write("shared_preload_libraries = ''\n")

    argv = [str(bindir / "postgres"), "-D", str(data)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=run_as_pg, start_new_session=True
        )
    pg = Postgres(
        port=port, root=root, process=proc, has_stat_statements=has_pss, log_path=log_path,
        argv=argv, preexec=run_as_pg,
    )  # fmt: skip
    try:
        _wait_ready(pg, wait_s)
        _load(pg, db_dir)
    except BaseException:
        pg.stop()
        raise
    return pg


def _copy_pgserver(bindir: Path, root: Path) -> Path:
    """The pgserver wheel installed under /root is out of ``nobody``'s reach: give it a copy
    (the package and the shared libraries auditwheel put beside it), removed on stop."""
    package = bindir.parent.parent
    dest = root / "site"
    shutil.copytree(package, dest / package.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest / libs.name, symlinks=True)
    return dest / package.name / bindir.relative_to(package)


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can execute ``path`` (every parent searchable)."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _sharedir(bindir: Path) -> Path:
    """Where the extension control files live: beside the binaries, or Debian's layout."""
    candidates = (
        bindir.parent / "share" / "postgresql",
        bindir.parent / "share",
        Path("/usr/share/postgresql") / bindir.parent.name,
    )
    return next((c for c in candidates if (c / "extension").is_dir()), candidates[0])


def _admin_dsn(pg: Postgres, dbname: str) -> str:
    return f"postgresql://{USER}@/{dbname}?host={pg.root}&port={pg.port}"


def _wait_ready(pg: Postgres, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if pg.process.poll() is not None:
            tail = pg.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchlabError(f"PostgreSQL exited at start-up: {' | '.join(tail)}")
        try:
            with psycopg.connect(_admin_dsn(pg, "postgres"), connect_timeout=2):
                return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise BenchlabError(f"PostgreSQL did not accept connections within {wait_s:.0f} s")


def _load(pg: Postgres, db_dir: Path) -> None:
    with psycopg.connect(_admin_dsn(pg, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}" OWNER "{USER}"')
    files = [db_dir / "hello_world.sql"]
    if pg.has_stat_statements:
        files.append(db_dir / "pg_stat_statements.sql")
    with psycopg.connect(_admin_dsn(pg, DATABASE), autocommit=True) as conn:
        for path in files:
            conn.execute(path.read_text())  # type: ignore[arg-type]
