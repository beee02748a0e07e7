"""py-spy: where it is, whether it can read the targets here, and one recording.

Every check runs before the run starts and fails with one line saying what to change: the
profiler missing, ptrace not permitted (tried for real on a process of ours, so that Yama's
``ptrace_scope``, a dropped ``CAP_SYS_PTRACE`` or a seccomp filter all show), or a target
interpreter py-spy cannot read (a free-threaded build).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchlab.binaries import find_binary
from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.sampling import process_tree

PY_SPY_VERSION = "0.4.3"  # pinned in pyproject.toml and the lock, as k6 is
DEFAULT_RATE_HZ = 100  # py-spy's own default: samples per second per thread
PTRACE_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
STOP_TIMEOUT_S = 60.0  # py-spy writes its file after SIGINT; a big profile takes seconds


def find_py_spy() -> str:
    """``BENCHLAB_PY_SPY`` if set, else the binary the ``py-spy`` wheel put beside this Python, else PATH."""
    return find_binary(
        "py-spy", "BENCHLAB_PY_SPY", settings().py_spy,
        f"--profile needs py-spy, which is not installed: `pip install py-spy=={PY_SPY_VERSION}` "
        "(or point BENCHLAB_PY_SPY at its binary)",
    )  # fmt: skip


def py_spy_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().removeprefix("py-spy ").strip() or "unknown"


def ptrace_scope() -> int | None:
    try:
        return int(PTRACE_SCOPE.read_text().strip())
    except (OSError, ValueError):
        return None  # no Yama: only capabilities and seccomp decide


def check_ptrace(binary: str) -> None:
    """Refuses unless py-spy can read a Python process started the way the targets are (a child
    of benchlab, not of py-spy): it dumps one, and a refusal is reported with what to change."""
    scope = ptrace_scope()
    if scope == 3:
        raise BenchlabError("--profile: kernel.yama.ptrace_scope is 3 (ptrace disabled until reboot); "
                            "profiling needs it at 2 or lower")  # fmt: skip
    probe = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
    try:
        time.sleep(0.3)  # past the interpreter's start, so there is a thread state to read
        detail = dump_problem(binary, probe.pid)
    finally:
        probe.kill()
        probe.wait()
    if detail is None:
        return
    if scope in (1, 2):
        fix = (f"kernel.yama.ptrace_scope is {scope}: run benchlab as root or with CAP_SYS_PTRACE, "
               "or `sysctl kernel.yama.ptrace_scope=0`")  # fmt: skip
    else:
        fix = "benchlab needs CAP_SYS_PTRACE (and no seccomp filter on ptrace/process_vm_readv)"
    raise BenchlabError(f"--profile: py-spy may not read processes here ({detail}); {fix}")


def dump_problem(binary: str, pid: int) -> str | None:
    """Why py-spy cannot read ``pid`` (its last line), or None when it dumped its threads."""
    try:
        out = subprocess.run([binary, "dump", "--nonblocking", "--pid", str(pid)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "py-spy dump did not answer within 30 s"
    if out.returncode == 0:
        return None
    said = (out.stderr or out.stdout).strip().splitlines()
    return said[-1] if said else f"exit code {out.returncode}"


def check_interpreter(python: str, name: str) -> None:
    """Refuses a free-threaded build (``Py_GIL_DISABLED``): py-spy reads the GIL build's thread states."""
    code = "import sysconfig; print(sysconfig.get_config_var('Py_GIL_DISABLED') or 0)"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise BenchlabError(f"--profile: cannot run {name}'s interpreter {python}: {exc.strerror}") from exc
    if out.stdout.strip() == "1":
        raise BenchlabError(f"--profile: {name} runs on a free-threaded Python ({python}), which py-spy "
                            f"{PY_SPY_VERSION} cannot read; profile it on a build with the GIL")  # fmt: skip


@dataclass
class SubprocessRecorder:
    """``py-spy record`` as a child of this process, on a target's master and every subprocess
    (its workers), all threads, Python frames only, without pausing the target
    (``--nonblocking``). Natively benchlab runs it; in compose the sidecar's agent does."""

    binary: str
    pid: int
    output: Path
    rate_hz: int = DEFAULT_RATE_HZ
    _proc: subprocess.Popen[str] | None = None
    _started: float = 0.0
    _workers: set[int] = field(default_factory=set)
    seconds: float = 0.0  # how long it sampled, for the idle count
    cpu_seconds: float | None = None  # py-spy's own CPU while sampling
    died: list[int] = field(default_factory=list)  # the target's processes gone by the stop

    def command(self) -> list[str]:
        return [self.binary, "record", "--pid", str(self.pid), "--subprocesses", "--nonblocking",
                "--full-filenames", "--format", "speedscope", "--rate", str(self.rate_hz),
                "--output", str(self.output)]  # fmt: skip

    def start(self) -> str | None:
        """Starts sampling; returns why it cannot (the target not visible from here), or None."""
        self._workers = {p.pid for p in process_tree(self.pid)}
        if not self._workers:
            return f"not profiled: the target's process {self.pid} cannot be seen from here"
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)  # fmt: skip
        self._started = time.monotonic()
        return None

    def stop(self) -> str | None:
        """Stops it (SIGINT: it writes the file); returns why there is no profile, or None."""
        assert self._proc is not None
        if self._proc.returncode is not None and self.seconds:
            return None if self.output.is_file() else "py-spy wrote no profile"  # stopped already
        self.seconds = time.monotonic() - self._started
        self.died = sorted(self._workers - {p.pid for p in process_tree(self.pid)})
        with contextlib.suppress(psutil.Error):  # what py-spy itself cost, before it writes its file
            times = psutil.Process(self._proc.pid).cpu_times()
            self.cpu_seconds = times.user + times.system
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            said, _ = self._proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            said, _ = self._proc.communicate()
            return f"py-spy did not finish within {STOP_TIMEOUT_S:g} s of being stopped"
        if not self.output.is_file():
            lines = [ln for ln in (said or "").strip().splitlines() if ln.strip()]
            return f"py-spy wrote no profile: {lines[-1] if lines else f'exit code {self._proc.returncode}'}"
        return None
