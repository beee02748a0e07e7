"""The yardstick's other side: TechEmpower's app, from a throwaway copy of their folder pointed
at the lab's Postgres, in a venv of its own, started and stopped as one process group
(``scripts/yardstick.py`` measures it beside ours)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchlab.errors import BenchlabError
from benchlab.harness import repo_root
from benchlab.ports import check_port_free
from benchlab.postgres import death_signal
from benchlab.venvs import service_python

DB_HOST = "tfb-database"  # where every TFB app looks for Postgres
DB_PORT = re.compile(r"(?<![\w.])5432(?!\d)")
VENVS = Path(tempfile.gettempdir()) / "benchlab-yardstick-venvs"
STOP_GRACE_S = 10


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def copy_theirs(folder: Path, replacements: list[list[str]], ours: list[str]) -> Path:
    """Their folder copied into a fresh temp directory, with the user's replacements applied and
    ``ours`` (files of this repo) beside their code, never over one of their files."""
    work = Path(tempfile.mkdtemp(prefix="benchlab-yardstick-"))
    copy = work / folder.resolve().name
    try:
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"))
        log(f"their app: {folder} copied to {copy}")
        replace_text(copy, folder, replacements)
        for name in ours:
            if (copy / Path(name).name).exists():
                raise BenchlabError(f"--theirs-with {name}: their folder has a {Path(name).name} of its own")
            shutil.copy(repo_root() / name, copy)
            log(f"  with our {name}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return copy


def replace_text(copy: Path, folder: Path, replacements: list[list[str]]) -> None:
    for name, old, new in replacements:
        path = copy / name
        if not path.is_file():
            raise BenchlabError(f"--theirs-replace: no file {name} in {folder}")
        text = path.read_text()
        if old not in text:
            raise BenchlabError(f"--theirs-replace: {old!r} does not occur in {name}")
        path.write_text(text.replace(old, new))
        log(f"  changed {name}: {old!r} -> {new!r} ({text.count(old)}x)")


def point_at_database(copy: Path, port: int) -> None:
    """TFB's hard-coded ``tfb-database:5432`` becomes the lab's Postgres, in every ``*.py`` of the
    copy that names that host; each changed line is printed, so the comparison says what it did."""
    changed = 0
    for path in sorted(copy.rglob("*.py")):
        text = path.read_text()
        if DB_HOST not in text:
            continue
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            new = DB_PORT.sub(str(port), line.replace(DB_HOST, "127.0.0.1"))
            if new != line:
                log(f"  changed {path.relative_to(copy)}:{i + 1}: {line.strip()}  ->  {new.strip()}")
                lines[i] = new
                changed += 1
        path.write_text("".join(lines))
    if not changed:
        log(f"  no *.py names {DB_HOST}: their app must find the database itself (DATABASE_URL is set)")


def theirs_python(args: argparse.Namespace, folder: Path, ours_service: Path) -> str:
    """Their interpreter: given, a venv built from their requirements, or our target's own venv."""
    if args.theirs_python:
        return str(args.theirs_python)
    if not args.theirs_requirements:
        return service_python(ours_service, log)
    given = Path(args.theirs_requirements).expanduser()
    reqs = folder / given if not given.is_absolute() and (folder / given).is_file() else given
    if not reqs.is_file():
        raise BenchlabError(f"--theirs-requirements {args.theirs_requirements}: no such file (here or in {folder})")
    return requirements_venv(reqs.resolve())


def requirements_venv(reqs: Path) -> str:
    """A venv for ``reqs`` under the temp directory, built once per content and Python version
    (its ``-r`` includes are resolved by pip relative to the file)."""
    digest = hashlib.sha256(reqs.read_bytes() + sys.version.encode() + str(reqs).encode()).hexdigest()[:12]
    venv = VENVS / f"{reqs.stem}-{digest}"
    python, done = venv / "bin" / "python", venv / ".complete"
    if done.exists():
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    log(f"installing {reqs} into {venv} (first run only)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(reqs)],
                       check=True, capture_output=True, text=True)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        detail = next((ln for ln in reversed(lines) if ln.strip().startswith("ERROR")), lines[-1] if lines else "")
        raise BenchlabError(f"could not install {reqs}: {detail or 'no output'}") from exc
    done.touch()
    return str(python)


@dataclass
class Theirs:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return tail(self.log_path, 3)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchlabError(f"their app exited (code {self.proc.returncode}): {tail(self.log_path)}")


@contextlib.contextmanager
def run_theirs(argv: list[str], cwd: Path, env: dict[str, str], cpus: set[int] | None) -> Iterator[Theirs]:
    """Their server in its own session (on our target's CPUs, dying with us like the lab's
    servers); stopped by signal to its whole group on the way out."""
    log_path = cwd.parent / "theirs.log"
    arm = death_signal(signal.SIGTERM)

    def child_setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        arm()

    try:
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=child_setup)  # fmt: skip
    except OSError as exc:
        raise BenchlabError(f"cannot start their app ({shlex.join(argv)}): {exc.strerror or exc}") from None
    try:
        yield Theirs(proc, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the master or any worker left behind
        proc.wait()


def check_theirs_port(port: int) -> None:
    """A taken port is one line; inside the kernel's range for outgoing connections it may be held
    for a while by a client socket (pools and wrk open hundreds), which the line says."""
    try:
        check_port_free(port, "their app (--theirs-port)")
    except BenchlabError as exc:
        with contextlib.suppress(OSError, ValueError):
            low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
            if low <= port <= high:
                raise BenchlabError(
                    f"{exc}: it lies in the ephemeral range {low}-{high}, where an outgoing "
                    "connection may hold it briefly; retry, or pick another port"
                ) from None
        raise


def tail(log_path: Path, lines: int = 5) -> str:
    text = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
    return " | ".join(text[-lines:]) or "(no output)"


def wait_answering(theirs: Theirs, url: str, timeout_s: float) -> None:
    """Their app answers HTTP at all (any status: which tests it has is probed next)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        theirs.check_alive()
        try:
            httpx.get(url + "/", timeout=5)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise BenchlabError(f"their app did not answer at {url} within {timeout_s:.0f} s: {tail(theirs.log_path)}")


# --- load ------------------------------------------------------------------------------------------
