"""The native harness: a real Postgres, the upstream and the real target servers on 127.0.0.1, no Docker.

``benchlab up --native``, ``benchlab run --native`` and the tests all start the lab through
``NativeLab``, so what the tests prove is what users run.

Nothing outlives the lab, however benchlab ends: its servers get a death signal from the kernel
when the thread that started them exits (``postgres.death_signal``: SIGTERM for a target, whose
supervisor then stops its workers), and whatever a crashed lab still left (a process that ignored
it, the temp directories) carries its owner's record and is removed by the next ``start()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from benchlab.config.settings import settings
from benchlab.cpus import RoleCpus
from benchlab.errors import BenchlabError
from benchlab.interpreters import find_interpreter
from benchlab.model.level import AXIS_NAMES, Axes
from benchlab.ports import check_port_free
from benchlab.postgres import (
    OWNER_ENV,
    OWNER_FILE,
    Postgres,
    death_signal,
    find_bindir,
    mark_owned,
    owned_env,
    start_postgres,
)
from benchlab.sampling import owner_alive, process_tree
from benchlab.targets import Target
from benchlab.upstream import Upstream, start_upstream
from benchlab.venvs import service_python


def repo_root() -> Path:
    """The checkout holding ``db/`` and ``services/`` (``BENCHLAB_ROOT`` overrides)."""
    root = Path(settings().root or Path(__file__).resolve().parents[2])
    if not (root / "db").is_dir() or not (root / "services").is_dir():
        raise BenchlabError(
            f"native mode needs a benchlab checkout: no db/ and services/ under {root} "
            "(install with `pip install -e .` from the checkout, or set BENCHLAB_ROOT)"
        )
    return root


@dataclass
class RunningTarget:
    target: Target
    process: subprocess.Popen[bytes]
    log_path: Path

    def processes(self) -> list[psutil.Process]:
        return process_tree(self.process.pid)

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"


KIT_FILES = ("target_kit.py", "head_limit.py")  # the target kit: every service image copies these in


def target_kit_dir(parent: Path) -> Path:
    """``parent/kit`` holding a copy of the target kit (the files every image copies in too):
    what a target's ``PYTHONPATH`` needs when it is started outside its image."""
    kit = parent / "kit"
    kit.mkdir(exist_ok=True)
    for name in KIT_FILES:
        if not (kit / name).is_file():
            shutil.copy2(Path(__file__).with_name(name), kit / name)
    return kit


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class NativeLab:
    """Postgres plus the selected targets; a context manager that always cleans up.

    Start it from the main thread: only then do its servers die with benchlab on ``kill -9``
    (the kernel's death signal follows the forking thread, see ``postgres.death_signal``).
    """

    def __init__(
        self,
        targets: list[Target],
        *,
        cpus: RoleCpus | None = None,
        workers: int | None = None,
        setup: Axes | None = None,
        db_port: int | None = None,
        ready_timeout_s: float = 90,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self.root = repo_root()
        self.targets = targets
        self.cpus = cpus or RoleCpus()
        self.setup = setup or Axes(workers=workers)  # the swept axes' values the targets run with
        self.db_port = db_port
        self.ready_timeout_s = ready_timeout_s
        self.log = log
        self.postgres: Postgres | None = None
        self.upstream: Upstream | None = None
        self.database_info: dict[str, str | bool] | None = None  # Postgres.info, kept after stop()
        self.running: dict[str, RunningTarget] = {}
        self.refused: dict[str, str] = {}  # targets the current setup could not run, and why
        self.log_dir = Path(tempfile.mkdtemp(prefix="benchlab-logs-"))
        mark_owned(self.log_dir)

    @property
    def dsn(self) -> str:
        assert self.postgres is not None, "lab not started"
        return self.postgres.dsn

    def start(self) -> NativeLab:
        reap_leftovers(self.log)  # a crashed lab's servers would hold the ports
        for t in self.targets:
            check_port_free(t.port, t.name)
        found = find_bindir()  # a bad BENCHLAB_PG_BINDIR fails before minutes of venv building
        if self.setup.python:
            find_interpreter(self.setup.python)  # before Postgres starts
        self.log("starting PostgreSQL")
        with _signals_deferred():  # a few seconds; no window where it runs unrecorded
            self.postgres = start_postgres(self.root / "db", found, port=self.db_port, cpus=self.cpus.db)
        self.database_info = self.postgres.info
        self.log("starting the upstream")
        with _signals_deferred():
            self.upstream = start_upstream(self.root, self.log_dir, self.cpus.upstream, self.log)
        if not self.postgres.has_stat_statements:
            self.log(
                f"PostgreSQL {self.postgres.version} in {self.postgres.found.path} has no pg_stat_statements: "
                "query counts will not be verified (install your distribution's postgresql package, "
                "e.g. `apt-get install postgresql`)"
            )
        self.refused = self._start_targets()
        return self

    def _spawn(self, target: Target, python: str) -> RunningTarget:
        env = owned_env()
        env.update(
            DATABASE_URL=self.dsn,
            UPSTREAM_URL=self.upstream.url if self.upstream else "",
            BENCHLAB_HOST="127.0.0.1",
            BENCHLAB_PORT=str(target.port),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(self._target_kit()), env.get("PYTHONPATH")])),
        )
        if self.setup.workers:
            env["BENCHLAB_WORKERS"] = str(self.setup.workers)
        cpus = self.target_cpus()
        arm = death_signal(signal.SIGTERM)  # its supervisor then stops the workers

        def child_setup() -> None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            if cpus:
                os.sched_setaffinity(0, cpus)
            arm()

        argv = [python if part == "python" else part for part in target.command]
        log_path = self.log_dir / f"{target.name}.log"
        self.log(f"starting {target.name}: {' '.join(target.command)}")
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv, cwd=self.root / "services" / target.service, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=child_setup,
            )  # fmt: skip
        return RunningTarget(target, proc, log_path)

    def target_cpus(self) -> set[int] | None:
        """What a target may run on: with ``workers`` set, that many of the targets' CPUs (the
        lowest), so N workers get N cores; else the targets' whole set (None: not pinned)."""
        if not self.setup.workers:
            return self.cpus.targets
        return set(sorted(self.cpus.targets_set())[: self.setup.workers])

    def restart_targets(self, setup: Axes) -> dict[str, str]:
        """Every target again with another ``setup`` (one combination of a sweep); Postgres stays."""
        self._stop_targets()
        self.setup = setup
        self.refused = self._start_targets()
        return self.refused

    def _start_targets(self) -> dict[str, str]:
        """The targets on the current setup, each in its service's venv for the setup's Python.
        In a sweep a target that cannot run on a setup (its packages do not install on that
        Python, it does not start, a worker of a free-threaded build runs with the GIL on) is
        refused, why in one line, and the others run: returns ``{target: why}``. Without a sweep
        any of that fails the lab, as it always has."""
        setup = self.setup
        refused: dict[str, str] = {}
        base = find_interpreter(setup.python).path if setup.python else None
        pythons: dict[str, str] = {}
        for service in dict.fromkeys(t.service for t in self.targets):
            try:
                pythons[service] = service_python(self.root / "services" / service, self.log, base)
            except BenchlabError as exc:
                if not setup.swept:
                    raise
                refused.update({t.name: str(exc) for t in self.targets if t.service == service})
        for t in self.targets:
            if t.name not in refused:
                check_port_free(t.port, t.name)
                with _signals_deferred():
                    self.running[t.name] = self._spawn(t, pythons[t.service])
        for t in self.targets:
            if t.name in refused:
                continue
            try:
                self._wait_ready(self.running[t.name])
                if setup.python and setup.python.endswith("t"):
                    gil_off(t, setup.workers or len(self.target_cpus() or self.cpus.targets_set()))
            except BenchlabError as exc:
                if not setup.swept:
                    raise
                refused[t.name] = str(exc)
                self._stop_targets([t.name])
        for name, why in refused.items():
            self.log(f"{name} refused with {setup.label(AXIS_NAMES)}: {why}")
        return refused

    def _target_kit(self) -> Path:
        return target_kit_dir(self.log_dir)

    def _wait_ready(self, rt: RunningTarget) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if rt.process.poll() is not None:
                raise BenchlabError(f"{rt.target.name} exited at start-up: {rt.log_tail()}")
            if rt.target.answers():
                return
            time.sleep(0.2)
        raise BenchlabError(
            f"{rt.target.name} did not become ready at {rt.target.url}/json within {self.ready_timeout_s:.0f} s: "
            f"{rt.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to each server's process group, SIGKILL after a grace period; drop the data."""
        self._stop_targets()
        if self.upstream:
            self.upstream.down()
            self.upstream = None
        if self.postgres:
            self.postgres.stop()
            self.postgres = None
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def _stop_targets(self, names: list[str] | None = None) -> None:
        stopping = {n: rt for n, rt in self.running.items() if names is None or n in names}
        for rt in stopping.values():
            _signal_group(rt.process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, rt in stopping.items():
            try:
                rt.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(rt.process, signal.SIGKILL)
                rt.process.wait()
            _signal_group(rt.process, signal.SIGKILL)  # any straggler left in the group
            del self.running[name]

    def __enter__(self) -> NativeLab:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gil_off(target: Target, workers: int) -> None:
    """On a free-threaded build every worker must run with the GIL off: an extension module that
    does not declare free-threading support turns it back on, silently. Asked of as many answers
    as there are workers, twice over, so that each worker is likely asked."""
    for _ in range(2 * max(1, workers)):
        try:
            info = httpx.get(target.url + "/benchlab/info", timeout=5).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BenchlabError(f"no /benchlab/info to check the GIL ({exc})") from None
        if info.get("gil_enabled") is not False:
            raise BenchlabError("a worker runs with the GIL on (a module without free-threading support "
                                f"turned it back on, or an older target_kit): gil_enabled={info.get('gil_enabled')}")


def reap_leftovers(log: Callable[[str], None]) -> None:
    """Kills the processes and removes the temp directories of labs whose owner is provably
    dead (its record names a process of this PID namespace that is gone); says in one line
    what it removed, and what it could not. Anything without a record is not ours to touch."""
    victims = []
    for proc in psutil.process_iter():
        try:
            raw = proc.environ().get(OWNER_ENV)
            if raw and proc.pid != os.getpid() and owner_alive(json.loads(raw)) is False:
                victims.append(proc)
        except (psutil.Error, ValueError):
            continue
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(victims, timeout=5)
    kept = [f"process {p.pid}" for p in alive]
    removed = []
    tmp = Path(tempfile.gettempdir())
    for directory in sorted([*tmp.glob("benchlab-pg-*"), *tmp.glob("benchlab-logs-*")]):
        try:
            owner = json.loads((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner_alive(owner) is not False:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        (kept if directory.exists() else removed).append(str(directory))
    if removed or len(victims) > len(alive):
        log(f"removed what a crashed benchlab left: {len(victims) - len(alive)} process(es), "
            f"{len(removed)} director(ies)")  # fmt: skip
    if kept:
        log(f"could not remove what a crashed benchlab left: {', '.join(kept)}")


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM waits until a started process is recorded, so stop() can find it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
