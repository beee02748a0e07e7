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
import os
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from yardstick_args import check_args, parse_args
from yardstick_theirs import (
    check_theirs_port,
    copy_theirs,
    log,
    point_at_database,
    run_theirs,
    theirs_python,
    wait_answering,
)

from benchlab.analysis.stats import RatioEstimate, paired_log_ratio
from benchlab.contract import TEST_TYPES, BodyProblem, TestType, clamp_queries
from benchlab.cpus import RoleCpus, available
from benchlab.engines import Load, Request, Wrk
from benchlab.engines.wrk import find_wrk
from benchlab.errors import BenchlabError
from benchlab.harness import NativeLab, repo_root
from benchlab.measurement import Measurement
from benchlab.postgres import owned_env
from benchlab.target_kit import tree_cpu_seconds
from benchlab.targets import load_targets
from benchlab.venvs import service_python

PIPELINE = {"plaintext": 16}  # TechEmpower pipelines plaintext 16 deep
PAUSE_S = 1.0  # after each wrk run, as TechEmpower pauses between steps
SETTLE_TIMEOUT_S = 30.0  # the longest wait for a side to drain its queue after a run


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
    args = parse_args(sys.argv[1:] if argv is None else argv, __doc__.splitlines()[0])
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
