"""A real, throwaway PostgreSQL for native runs, loaded from ``db/``.

Which server: ``BENCHLAB_PG_BINDIR`` when set, else the ``postgres`` on PATH, the bindir
``pg_config`` names, the newest Debian/Ubuntu server under ``/usr/lib/postgresql``, and last the
binaries bundled in the ``pgserver`` wheel (no pg_stat_statements). The server mirrors the db
image: the benchmark role is the superuser (as ``POSTGRES_USER`` makes it in the official
image), ``db/postgresql.conf`` is included, and the same SQL files are run. As root, Postgres
runs as ``nobody`` (initdb refuses root).

Nothing outlives the lab: the server dies with the thread that started it (``die_with_parent``,
so ``kill -9`` of benchlab included), and its directory and processes carry an owner record
(``OWNER_FILE``, ``OWNER_ENV``) by which the next lab finds and removes a crashed one's leftovers.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.ports import check_port_free, free_port
from benchlab.sampling import process_identity, process_tree

USER = settings().db_user
PASSWORD = settings().db_password
DATABASE = settings().db_name
ENV_BINDIR = "BENCHLAB_PG_BINDIR"
DISTRIBUTIONS = Path("/usr/lib/postgresql")  # Debian/Ubuntu: <root>/<version>/bin
_PGSERVER_TAIL = ("pgserver", "pginstall", "bin")
OWNER_FILE = "benchlab-owner.json"  # in each temp directory a lab makes: whose it is
OWNER_ENV = "BENCHLAB_LAB_OWNER"  # in each process a lab starts, and so in its descendants
PR_SET_PDEATHSIG = 1


def owner_record() -> str:
    """This process as the owner of what it starts (``sampling.process_identity`` as JSON)."""
    return json.dumps(process_identity(), sort_keys=True)


def mark_owned(directory: Path) -> None:
    """Records that this process owns ``directory``, so a later lab may remove it once we are gone."""
    (directory / OWNER_FILE).write_text(owner_record() + "\n")


def owned_env() -> dict[str, str]:
    return {**os.environ, OWNER_ENV: owner_record()}


def death_signal(sig: int) -> Callable[[], None]:
    """For a child's preexec: the kernel sends it ``sig`` when the thread that forked it exits
    (benchlab killed with -9 included). Armed only from the main thread, whose end is the
    process's: from another thread the child would die with that thread. Linux only; the
    setting is cleared by a uid change, so call it after any. Resolved before the fork, since a
    forked child of a threaded process must not load libraries."""
    prctl = _prctl() if threading.current_thread() is threading.main_thread() else None
    parent = os.getpid()

    def arm() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(1)

    return arm


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Bindir:
    """A directory with ``initdb`` and ``postgres``, and how it was found (recorded with runs)."""

    path: Path
    source: str  # ENV_BINDIR, "PATH", "pg_config", "distribution" or "pgserver"


def find_bindir(path: str | None = None, distributions: Path = DISTRIBUTIONS) -> Bindir:
    """The server a user would expect: their override, then their shell's, their pg_config's,
    their distribution's newest; the pgserver wheel (no pg_stat_statements) only when none exists.
    ``path`` is the PATH to search, by default the environment's."""
    override = settings().pg_bindir
    if override:
        bindir = Path(override).expanduser()
        if not _is_bindir(bindir):
            raise BenchlabError(f"{ENV_BINDIR}={override}: no executable postgres and initdb there")
        return Bindir(bindir.resolve(), ENV_BINDIR)
    for source, bindir in _candidates(path, distributions):
        if _is_bindir(bindir):
            return Bindir(bindir, source)
    try:
        import pgserver  # type: ignore[import-untyped]
    except ImportError as exc:
        raise BenchlabError(
            f"no PostgreSQL found on PATH, via pg_config or under {distributions}: install it "
            f"(apt-get install postgresql), set {ENV_BINDIR}, or `pip install pgserver`"
        ) from exc
    return Bindir(Path(pgserver.__file__).resolve().parent.joinpath(*_PGSERVER_TAIL[1:]), "pgserver")


def _candidates(path: str | None, distributions: Path) -> Iterator[tuple[str, Path]]:
    """Lazily, so pg_config only runs when PATH has no server."""
    postgres = shutil.which("postgres", path=path)
    if postgres:
        yield "PATH", Path(os.path.realpath(postgres)).parent
    pg_config = shutil.which("pg_config", path=path)
    if pg_config and (bindir := _pg_config(Path(pg_config), "--bindir")):
        yield "pg_config", bindir
    for bindir in distribution_bindirs(distributions):
        yield "distribution", bindir


def distribution_bindirs(root: Path = DISTRIBUTIONS) -> list[Path]:
    """``<root>/<version>/bin``, newest first by number (16 before 9.6); other names ignored."""
    found = [(_version_key(d.name), d / "bin") for d in root.iterdir()] if root.is_dir() else []
    return [bindir for key, bindir in sorted(found, reverse=True) if key and bindir.is_dir()]


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else ()


def _is_bindir(bindir: Path) -> bool:
    return all((bindir / name).is_file() and os.access(bindir / name, os.X_OK) for name in ("postgres", "initdb"))


def _pg_config(pg_config: Path, option: str) -> Path | None:
    """One directory ``pg_config`` reports, or None when it cannot say (Debian's wrapper without
    a server's or libpq-dev's pg_config exits 1)."""
    try:
        out = subprocess.run([str(pg_config), option], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.stdout.strip() else None


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
    found: Bindir
    env: dict[str, str] = field(default_factory=owned_env)
    version: str = ""  # as the running server reports it, e.g. "15.18"
    _stopped: bool = field(default=False, repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def info(self) -> dict[str, str | bool]:
        """Which server the numbers were measured against, and whether query counts can be checked."""
        return {
            "version": self.version,
            "bindir": str(self.found.path),
            "source": self.found.source,
            "pg_stat_statements": self.has_stat_statements,
        }

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
                start_new_session=True, env=self.env,
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
    found: Bindir,
    port: int | None = None,
    cpus: set[int] | None = None,
    wait_s: float = 60,
) -> Postgres:
    """initdb, start on 127.0.0.1, create the database and load ``db/*.sql``; ``found`` is
    ``find_bindir()``'s answer, taken early so a bad override fails before anything starts."""
    bindir = found.path
    port = port or free_port()
    check_port_free(port, "PostgreSQL")
    preexec, uid, gid = _demote()
    root = Path(tempfile.mkdtemp(prefix="benchlab-pg-"))
    mark_owned(root)
    data = root / "data"
    log_path = root / "postgres.log"
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        for p in (root, pwfile):
            os.chown(p, uid, gid)  # type: ignore[arg-type]
        if not _reachable_by_others(bindir / "postgres"):
            if bindir.parts[-3:] != _PGSERVER_TAIL:
                shutil.rmtree(root, ignore_errors=True)
                raise BenchlabError(f"{bindir / 'postgres'}: not executable by nobody, whom root runs it as")
            bindir = _copy_pgserver(bindir, root)

    arm = death_signal(signal.SIGINT)  # Postgres's fast shutdown: ends its backends, waits for no client
    env = owned_env()

    def run_as_pg() -> None:
        # the harness may start us with SIGINT/SIGTERM blocked; the server must receive them
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if cpus:
            os.sched_setaffinity(0, cpus)
        if preexec:
            preexec()
        arm()  # after the uid change, which clears it

    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
             "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"],
            check=True, capture_output=True, preexec_fn=run_as_pg, env=env,
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
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=run_as_pg, start_new_session=True, env=env
        )
    pg = Postgres(
        port=port, root=root, process=proc, has_stat_statements=has_pss, log_path=log_path,
        argv=argv, preexec=run_as_pg, found=found, env=env,
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
    """Where this server looks for extension control files: its own pg_config knows (same build,
    relocation-aware); without one, beside the binaries or Debian's layout."""
    own = _pg_config(bindir / "pg_config", "--sharedir")
    if own:
        return own
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
        row = conn.execute("SHOW server_version").fetchone()
        pg.version = str(row[0]).split(" ")[0] if row else ""  # of "15.18 (Debian 15.18-0+deb12u1)"
    files = [db_dir / "hello_world.sql"]
    if pg.has_stat_statements:
        files.append(db_dir / "pg_stat_statements.sql")
    with psycopg.connect(_admin_dsn(pg, DATABASE), autocommit=True) as conn:
        for path in files:
            conn.execute(path.read_text())  # type: ignore[arg-type]
