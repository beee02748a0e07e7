#!/usr/bin/env python3
"""One of our targets side by side with TechEmpower's app for it: same machine, database and load.

    python scripts/yardstick.py --pair asgi-uvicorn --tfb ~/FrameworkBenchmarks

runs one of the pairs in ``scripts/yardstick/pairs.toml`` (ours, their folder in a checkout of
TechEmpower's FrameworkBenchmarks, their server's command with our server's settings, their
venv and patches). Any other pairing is given in full:

    python scripts/yardstick.py --ours fastapi-uvicorn --theirs ~/FrameworkBenchmarks/frameworks/Python/fastapi \\
        --theirs-env USE_ORJSON=1 \\
        --theirs-cmd "python -m uvicorn app:app --host 127.0.0.1 --port {port} --workers {workers} \\
                      --loop uvloop --http httptools --no-access-log --log-level warning \\
                      --backlog 4096 --timeout-keep-alive 10"

The lab (``NativeLab``: a throwaway Postgres with TechEmpower's schema and data, plus our target)
starts first; then their app, from a copy of their folder made in a temp directory (their code
is never copied into this repo), pointed at the same Postgres: TFB apps hard-code
``tfb-database:5432``, so the copy's ``*.py`` files get the lab's host and port instead, and
every line changed is printed. ``--theirs-cmd`` is their server's command line: the word
``python`` becomes their interpreter, ``{port}`` and ``{workers}`` are filled in, so the same
server settings as ours can be given and are printed. Their interpreter defaults to our
target's venv (identical library versions); ``--theirs-python`` or ``--theirs-requirements``
(a venv built once under the temp directory) give it other packages.

``--theirs-with FILE`` puts a file of ours beside their code, for server settings that live in
code: our Uvicorn head limits are a protocol class, and the Uvicorn pairs give it to theirs too.

Where their code no longer runs on current libraries (e.g. Starlette's ``TemplateResponse`` now
takes the request first), ``--theirs-replace FILE OLD NEW`` edits the copy, and says so.

Each test is first requested once on both sides (a side answering non-200, or 200 with another
content type, skips the test, e.g. cached-queries where TFB has none; a body TFB's verifier would
reject, or rows not holding the stored values, are noted), then loaded by
wrk (the lab's engine, TechEmpower's Accept headers, plaintext pipelined 16 deep) in rounds
that alternate which side goes first. The table gives the median req/s per side and ours/theirs
from the rounds taken as pairs (the geometric mean of each round's ratio, so the machine's drift
cancels), with its 95 % interval (paired t on log req/s; at least 3 rounds); a test where ours is
behind is called slower only when that whole interval lies below 1.
A side with non-2xx responses or socket errors is flagged. On a shared machine the
figures compare the two sides under the same conditions, nothing more: they are not benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx
import psycopg

from benchlab.contract import TEST_TYPES, TESTS, BodyProblem, TestType, clamp_queries
from benchlab.cpus import RoleCpus, available
from benchlab.engines import Load, Request, Wrk
from benchlab.engines.wrk import find_wrk
from benchlab.errors import BenchlabError
from benchlab.harness import NativeLab, repo_root
from benchlab.measurement import Measurement
from benchlab.ports import check_port_free
from benchlab.postgres import death_signal, owned_env
from benchlab.stats import RatioEstimate, paired_log_ratio
from benchlab.target_kit import tree_cpu_seconds
from benchlab.targets import load_targets, split_names
from benchlab.venvs import service_python

PAIRS_FILE = Path(__file__).with_name("yardstick") / "pairs.toml"
PAIRS = tomllib.loads(PAIRS_FILE.read_text())
PIPELINE = {"plaintext": 16}  # TechEmpower pipelines plaintext 16 deep
DB_HOST = "tfb-database"  # where every TFB app looks for Postgres
DB_PORT = re.compile(r"(?<![\w.])5432(?!\d)")
VENVS = Path(tempfile.gettempdir()) / "benchlab-yardstick-venvs"
STOP_GRACE_S = 10
PAUSE_S = 1.0  # after each wrk run, as TechEmpower pauses between steps
SETTLE_TIMEOUT_S = 30.0  # the longest wait for a side to drain its queue after a run


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Side:
    """One server under load: its label, base URL and what each test's path is there."""

    label: str
    url: str
    log_tail: Callable[[], str]  # its server's last log lines, for a test it fails
    pid: int  # its server's master: the whole tree's CPU is what a request costs
    paths: dict[str, str] = field(default_factory=dict)  # test -> path, overriding the test's own

    def url_for(self, spec: TestType, queries: int) -> str:
        path = self.paths.get(spec.name, spec.path)
        if spec.param is None:
            return self.url + path
        return f"{self.url}{path}?{spec.param}={queries}"


@dataclass
class Measured:
    """One wrk run on one side, and the CPU seconds its server tree spent during it."""

    measurement: Measurement
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.measurement.rps

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.measurement.requests if self.measurement.requests else float("nan")


@dataclass
class Row:
    test: str
    runs: dict[str, list[Measured]] = field(default_factory=lambda: {"ours": [], "theirs": []})
    skipped: str = ""

    def median(self, side: str) -> float:
        return statistics.median(r.rps for r in self.runs[side])

    def cpu_us(self, side: str) -> float:
        """Median server CPU per request: what noise from other processes on the machine moves least."""
        return statistics.median(r.cpu_us_per_request for r in self.runs[side])

    def ratio(self) -> RatioEstimate:
        """ours/theirs req/s, paired by round: a round runs both sides back to back, so the
        machine's drift over minutes (seen here moving both sides 10-20 %) cancels in each pair."""
        pairs = [(t.rps, o.rps) for o, t in zip(self.runs["ours"], self.runs["theirs"], strict=True)]
        return paired_log_ratio(pairs)

    def errors(self, side: str) -> tuple[int, int]:
        """Non-2xx/3xx responses and socket errors, summed over the measured rounds."""
        runs = [r.measurement for r in self.runs[side]]
        return sum(m.errors_status for m in runs), sum(m.socket_errors for m in runs)


# --- arguments -------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (exit 2) instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"yardstick: {message} (see --help)\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Parser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Placeholders in --theirs-cmd: {port}, {workers}. Figures on a shared machine are not benchmarks.",
    )  # fmt: skip
    p.add_argument("--pair", choices=sorted(PAIRS["pairs"]), help="a pair in yardstick/pairs.toml (needs --tfb)")
    p.add_argument("--tfb", metavar="DIR", help="a checkout of TechEmpower's FrameworkBenchmarks, for --pair")
    p.add_argument("--ours", metavar="TARGET", help="our target's registry name")
    p.add_argument("--theirs", metavar="DIR", help="TechEmpower's app folder (copied to a temp dir)")
    p.add_argument("--theirs-cmd", metavar="CMD", help="their server's command line")
    p.add_argument("--theirs-python", metavar="PATH", help="their interpreter (default: our target's venv)")
    p.add_argument(
        "--theirs-requirements",
        metavar="FILE",
        help="build their interpreter's venv from FILE (relative: looked up in DIR first)",
    )
    p.add_argument(
        "--theirs-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for their app (repeatable), e.g. USE_ORJSON=1",
    )
    p.add_argument(
        "--theirs-path",
        action="append",
        default=[],
        metavar="TEST=PATH",
        help="their path for a test (repeatable), e.g. queries=/query for TFB's Flask",
    )
    p.add_argument(
        "--theirs-replace",
        action="append",
        nargs=3,
        default=[],
        metavar=("FILE", "OLD", "NEW"),
        help="replace text in the copy of their FILE (repeatable; OLD must occur)",
    )
    p.add_argument(
        "--theirs-with",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of this repo copied beside their app (repeatable): a server setting of ours that "
        "lives in code, e.g. services/fastapi/http_limits.py for --http http_limits:LimitedHttpToolsProtocol",
    )
    p.add_argument("--theirs-port", type=int, default=35580, help="their port (default 35580)")
    p.add_argument("--ours-port", type=int, help="our port (default: BENCHLAB_PORT_<TARGET>, else the registry's)")
    p.add_argument("--workers", type=int, help="workers for both sides (default: the CPUs the servers may use)")
    p.add_argument("--tests", default=",".join(TESTS), help=f"comma-separated, from {','.join(TESTS)}")
    p.add_argument("--queries", type=int, default=20, help="rows per request for queries/updates/cached-queries")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds per side and test (default 3)")
    p.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load per side and test (0: none)")
    p.add_argument("--connections", type=int, default=256, help="wrk connections (default 256)")
    p.add_argument("--ready-timeout", type=float, default=90, help="seconds their app may take to answer")
    args = p.parse_args(argv)
    try:
        apply_pair(args)
    except BenchlabError as exc:
        p.error(str(exc))
    return args


def apply_pair(args: argparse.Namespace) -> None:
    """``--pair``: the pair's ours, theirs, command, venv and patches; options given beside it
    add environment, paths and patches. Without it, --ours, --theirs and --theirs-cmd are needed."""
    if args.pair is None:
        missing = [opt for opt in ("ours", "theirs", "theirs_cmd") if not getattr(args, opt)]
        if missing:
            raise BenchlabError("give --pair NAME --tfb DIR, or all of --ours, --theirs and --theirs-cmd")
        return
    own = ("ours", "theirs", "theirs_cmd", "theirs_requirements")
    given = [f"--{opt.replace('_', '-')}" for opt in own if getattr(args, opt)]
    if given:
        raise BenchlabError(f"--pair sets {', '.join(given)} itself")
    if not args.tfb:
        raise BenchlabError("--pair needs --tfb DIR, a checkout of TechEmpower's FrameworkBenchmarks")
    pair = PAIRS["pairs"][args.pair]
    args.ours, args.theirs = pair["ours"], str(Path(args.tfb).expanduser() / pair["theirs"])
    args.theirs_cmd = PAIRS["servers"][pair["server"]]["cmd"].replace("{app}", pair["app"])
    if "requirements" in pair:
        args.theirs_requirements = str(PAIRS_FILE.with_name(pair["requirements"]))
    args.theirs_env = [f"{k}={v}" for k, v in pair.get("env", {}).items()] + args.theirs_env
    args.theirs_path = [f"{k}={v}" for k, v in pair.get("paths", {}).items()] + args.theirs_path
    args.theirs_replace = [list(r) for r in pair.get("replace", [])] + args.theirs_replace
    args.theirs_with = PAIRS["servers"][pair["server"]].get("with", []) + args.theirs_with
    log(f"pair {args.pair}: {pair['what']}")


def check_args(args: argparse.Namespace) -> tuple[Path, list[str], list[str], dict[str, str], dict[str, str]]:
    """Everything a user can get wrong, before minutes of start-up: their folder, their command
    and its placeholders, the tests, the env and path overrides. One BenchlabError each."""
    folder = Path(args.theirs).expanduser()
    if not folder.is_dir():
        raise BenchlabError(f"--theirs {args.theirs}: no such folder")
    try:
        cmd = shlex.split(args.theirs_cmd)
    except ValueError as exc:
        raise BenchlabError(f"--theirs-cmd: {exc}") from None
    if not cmd:
        raise BenchlabError("--theirs-cmd is empty: give their server's command line")
    try:
        [word.format(port=0, workers=0) for word in cmd]
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchlabError(f"--theirs-cmd: bad placeholder {exc}; only {{port}} and {{workers}} exist") from None
    tests = split_names(args.tests, "--tests")
    unknown = [t for t in tests if t not in TEST_TYPES]
    if unknown:
        raise BenchlabError(f"--tests: unknown test {unknown[0]!r}; tests: {', '.join(TESTS)}")
    env = dict(_pair(item, "--theirs-env", "KEY=VALUE") for item in args.theirs_env)
    paths = dict(_pair(item, "--theirs-path", "TEST=PATH") for item in args.theirs_path)
    for test, path in paths.items():
        if test not in TEST_TYPES or not path.startswith("/"):
            raise BenchlabError(f"--theirs-path {test}={path}: expected TEST=/path with TEST one of {', '.join(TESTS)}")
    for name, value, low in (("--rounds", args.rounds, 1), ("--connections", args.connections, 1),
                             ("--queries", args.queries, 1), ("--workers", args.workers or 1, 1)):  # fmt: skip
        if value < low:
            raise BenchlabError(f"{name}: expected at least {low}, got {value}")
    if args.duration < 1 or args.warmup < 0:
        raise BenchlabError("--duration must be at least 1 s and --warmup at least 0")
    if not 1 <= args.theirs_port <= 65535:
        raise BenchlabError(f"--theirs-port: expected a TCP port, got {args.theirs_port}")
    args.theirs_with = list(dict.fromkeys(args.theirs_with))  # a pair's file given again is one file
    for name in args.theirs_with:
        if not (repo_root() / name).is_file():
            raise BenchlabError(f"--theirs-with {name}: no such file in {repo_root()}")
        if (same := [n for n in args.theirs_with if Path(n).name == Path(name).name]) != [name]:
            raise BenchlabError(f"--theirs-with: {' and '.join(same)} would both be {Path(name).name} beside their app")
    if args.theirs_python and args.theirs_requirements:
        raise BenchlabError("--theirs-python and --theirs-requirements exclude each other")
    if args.theirs_python and not os.access(args.theirs_python, os.X_OK):
        raise BenchlabError(f"--theirs-python {args.theirs_python}: not an executable")
    return folder, cmd, tests, env, paths


def _pair(item: str, option: str, form: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise BenchlabError(f"{option}: expected {form}, got {item!r}")
    return key, value


# --- their app -------------------------------------------------------------------------------------


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


def probe(side: Side, spec: TestType, queries: int, dsn: str) -> tuple[bool, str]:
    """One request: whether the side has the test (200), and whether its body is what TFB's verifier
    expects, with the stored values (the lab's own contract checks; TFB's misses a wrong value)."""
    url = side.url_for(spec, queries)
    where = f"{side.label}: {url.removeprefix(side.url)}"
    try:
        resp = httpx.get(url, headers=spec.headers(), timeout=SETTLE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"{where} failed ({type(exc).__name__}; its log: {side.log_tail()})"
    if resp.status_code >= 500:
        return False, f"{where} answered {resp.status_code} (its log: {side.log_tail()})"
    if resp.status_code != 200:
        return False, f"{where} answered {resp.status_code}"
    got = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if got != spec.content_type.split(";")[0]:  # e.g. TFB's bare ASGI app answers 200 "Not found"
        return False, f"{where} answered 200 with {got or 'no content type'}, not {spec.content_type}"
    try:
        rows = spec.check_body(resp.content, clamp_queries(str(queries)) if spec.param else 1)
    except BodyProblem as exc:
        return True, f"{side.label}: {spec.name} body not as TFB's verifier expects it ({exc})"
    wrong = not_stored(dsn, rows) if spec.stored == "exact" else 0
    if wrong:
        return True, f"{side.label}: {spec.name}: {wrong} of {len(rows)} row(s) do not hold the stored randomNumber"
    return True, ""


def not_stored(dsn: str, rows: list[dict[str, int]]) -> int:
    """How many returned rows differ from the world table."""
    ids = [row["id"] for row in rows]
    try:
        with psycopg.connect(dsn) as conn:
            stored = dict(conn.execute("SELECT id, randomnumber FROM world WHERE id = ANY(%s)", [ids]).fetchall())
    except psycopg.Error as exc:
        raise BenchlabError(f"could not read the world table to check returned rows: {exc}") from None
    return sum(stored.get(row["id"]) != row["randomNumber"] for row in rows)


def measure(engine: Wrk, side: Side, spec: TestType, args: argparse.Namespace, duration_s: float) -> Measured:
    """One wrk run, then a pause until the side has drained what wrk left queued (a server keeps
    working on requests whose connections wrk closed): the other side's next run gets the CPUs.
    The CPU counted includes that drain, work the run caused."""
    url = side.url_for(spec, args.queries)
    load = Load(duration_s=duration_s, connections=args.connections, pipeline=PIPELINE.get(spec.name, 1))
    cpu_before = tree_cpu_seconds(side.pid)
    m = engine.run(Request(url=url, headers=spec.headers()), load)
    time.sleep(PAUSE_S)
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, headers=spec.headers(), timeout=SETTLE_TIMEOUT_S)  # answered once the queue ahead is done
    return Measured(m, tree_cpu_seconds(side.pid) - cpu_before)


def compare(sides: dict[str, Side], tests: list[str], args: argparse.Namespace, dsn: str) -> list[Row]:
    """Each test on both sides: probe, warm-up, then rounds whose first side alternates."""
    engine, rows = Wrk(), []
    for test in tests:
        spec, row = TEST_TYPES[test], Row(test)
        rows.append(row)
        probes = {key: probe(side, spec, args.queries, dsn) for key, side in sides.items()}
        for _, note in probes.values():
            if note:
                log(f"  {note}")
        missing = [note for has, note in probes.values() if not has]
        if missing:
            row.skipped = "skipped (" + "; ".join(missing) + ")"
            continue
        if args.warmup:
            for side in sides.values():
                measure(engine, side, spec, args, args.warmup)
        for n in range(args.rounds):
            order = ["ours", "theirs"] if n % 2 == 0 else ["theirs", "ours"]
            for key in order:
                row.runs[key].append(measure(engine, sides[key], spec, args, args.duration))
            figures = "  ".join(f"{k} {row.runs[k][-1].rps:,.0f}" for k in ("ours", "theirs"))
            log(f"  {test:<15} round {n + 1}/{args.rounds}: {figures} req/s")
    return rows


def verdict(estimate: RatioEstimate) -> str:
    """'ahead' (the paired ratio at least 1), 'slower' (its whole interval below 1), or
    'within noise' (below 1, but the rounds cannot tell the sides apart)."""
    if estimate.ratio is not None and estimate.ratio >= 1:
        return "ahead"
    if estimate.high is not None and estimate.high < 1:
        return "slower"
    return "within noise"


def table(rows: list[Row]) -> str:
    """test | req/s per side, ours/theirs and its 95 % interval (paired rounds) | server CPU µs
    per request per side and ours/theirs | errors (non-2xx/socket); ⚠ marks a side with errors."""
    out = [f"{'test':<15} {'ours req/s':>13} {'theirs req/s':>13} {'ours/theirs':>11} {'95 % CI':>14}  "
           f"{'ours µs/req':>11} {'theirs µs/req':>13} {'ours/theirs':>11}  "
           f"{'ours err':>9} {'theirs err':>10}  (µs/req = server CPU per request; err = non-2xx/socket)"]  # fmt: skip
    verdicts: dict[str, str] = {}  # measured test -> its verdict
    for row in rows:
        if row.skipped:
            out.append(f"{row.test:<15} {row.skipped}")
            continue
        cells = []
        for side in ("ours", "theirs"):
            non2xx, sock = row.errors(side)
            cells.append((f"{row.median(side):,.0f}" + (" ⚠" if non2xx or sock else ""), f"{non2xx}/{sock}"))
        estimate = row.ratio()
        verdicts[row.test] = verdict(estimate)
        ratio = f"{estimate.ratio:.2f}" if estimate.ratio is not None else "-"
        interval = estimate.interval_text()
        cpu_ours, cpu_theirs = row.cpu_us("ours"), row.cpu_us("theirs")
        cpu_ratio = f"{cpu_ours / cpu_theirs:.2f}" if cpu_theirs > 0 else "-"
        out.append(
            f"{row.test:<15} {cells[0][0]:>13} {cells[1][0]:>13} {ratio:>11} {interval:>14}  "
            f"{cpu_ours:>11,.0f} {cpu_theirs:>13,.0f} {cpu_ratio:>11}  {cells[0][1]:>9} {cells[1][1]:>10}"
        )
    ahead = [test for test, v in verdicts.items() if v == "ahead"]
    out.append(f"ours at least as fast in {len(ahead)} of {len(verdicts)} measured test(s)")
    for behind, what in (("within noise", "interval spans 1"), ("slower", "whole interval below 1")):
        if tests := [test for test, v in verdicts.items() if v == behind]:
            out.append(f"  behind, {behind} ({what}): {', '.join(tests)}")
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    folder, cmd, tests, extra_env, paths = check_args(args)
    env = dict(os.environ)
    if args.ours_port is not None:
        env[f"BENCHLAB_PORT_{args.ours.upper().replace('-', '_')}"] = str(args.ours_port)
    selected = load_targets([args.ours], env=env)
    if [t.name for t in selected] != [args.ours]:
        raise BenchlabError(f"--ours {args.ours}: a group; name one target")
    target = selected[0]
    check_theirs_port(args.theirs_port)
    root = repo_root()
    python = theirs_python(args, folder, root / "services" / target.service)
    cpus = RoleCpus.from_env()
    workers = args.workers or len(cpus.targets or available())
    argv = [python if w == "python" else w.format(port=args.theirs_port, workers=workers) for w in cmd]
    their_path = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])
    if not shutil.which(argv[0], path=their_path):
        raise BenchlabError(f"--theirs-cmd: {argv[0]} not found (use `python -m SERVER` for their venv's server)")
    find_wrk()
    copy = copy_theirs(folder, args.theirs_replace, args.theirs_with)
    try:
        with NativeLab([target], cpus=cpus, workers=workers, log=log) as lab:
            assert lab.postgres is not None
            point_at_database(copy, lab.postgres.port)
            theirs_env = owned_env()
            theirs_env.update(
                DATABASE_URL=lab.dsn, BENCHLAB_HOST="127.0.0.1", BENCHLAB_PORT=str(args.theirs_port),
                BENCHLAB_WORKERS=str(workers), PYTHONUNBUFFERED="1",
                PATH=their_path,
                **extra_env,
            )  # fmt: skip
            ours_python = service_python(root / "services" / target.service, log)
            log(f"ours:   {' '.join(target.command)}  (cwd services/{target.service}, {ours_python}, "
                f"{workers} workers, {target.url})")  # fmt: skip
            log(f"theirs: {shlex.join(argv)}  (cwd {copy}, {workers} workers)")
            if extra_env:
                log(f"        env {' '.join(f'{k}={v}' for k, v in extra_env.items())}")
            log(f"load:   wrk, {args.connections} connections (plaintext pipelined {PIPELINE['plaintext']}), "
                f"{args.warmup:g} s warm-up, {args.rounds} x {args.duration:g} s per side and test")  # fmt: skip
            shared = f"{len(available())} CPUs shared by wrk, both servers and Postgres"
            pinned = ", ".join(f"{role} {cpuset}" for role, cpuset in cpus.describe().items())
            log(f"cpus:   {pinned if cpus.targets or cpus.db else shared}: on a shared machine the figures "
                "compare the two sides, they are not a benchmark")  # fmt: skip
            with run_theirs(argv, copy, theirs_env, cpus.targets) as theirs:
                sides = {
                    "ours": Side(
                        "ours",
                        target.url,
                        lambda: lab.running[target.name].log_tail(3),
                        lab.running[target.name].process.pid,
                    ),
                    "theirs": Side(
                        "theirs", f"http://127.0.0.1:{args.theirs_port}", theirs.log_tail, theirs.proc.pid, paths
                    ),
                }
                wait_answering(theirs, sides["theirs"].url, args.ready_timeout)
                rows = compare(sides, tests, args, lab.dsn)
                theirs.check_alive()
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    print(f"\n{target.name} vs {folder} (medians over {args.rounds} round(s) per side)")
    print(table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except BenchlabError as exc:
        print(f"yardstick: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yardstick: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
