"""The ``benchlab`` command: thin argument parsing over the modules that do the work.

Every user error is a ``BenchlabError``: one line on stderr, exit code 2, no traceback; so is
an ``OSError`` that escapes (a full disk, no file descriptors left), which no command can go on after.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.hosts.spec import add_arguments as add_hosts_arguments

EXIT_USAGE = 2


def _targets_args(p: argparse.ArgumentParser, default: str = "core") -> None:
    p.add_argument(
        "--targets",
        help=f"comma-separated target names or groups: core, servers, style, baselines, all (default: {default})",
    )
    p.add_argument(
        "--target", action="append", default=[], metavar="NAME=URL",
        help="where a target listens, e.g. fastapi-uvicorn=http://10.0.0.2:8082 (repeatable)",
    )  # fmt: skip


def _native_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--native", action="store_true", help="start Postgres and the targets here, without Docker")
    p.add_argument(
        "--workers", type=_workers, metavar="N[,N...]",
        help="worker processes per target, each value pinned to as many of the targets' CPUs; "
        "`run` sweeps a list, e.g. 1,2 (default: the scenario's, else one per CPU)",
    )  # fmt: skip


def _versions(raw: str) -> list[str]:
    """``3.11,3.13,3.14t``: checked with the scenario's own rule (``config.scenario``)."""
    return [v.strip() for v in raw.split(",") if v.strip()]


def _workers(raw: str) -> tuple[int, ...]:
    """``--workers 0`` is refused rather than read as "auto"; so is a value given twice."""
    try:
        values = tuple(int(v) for v in raw.split(","))
    except ValueError:
        values = (0,)
    if min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected whole numbers of at least 1, comma-separated, got {raw!r}")
    return values


def one_workers_value(args: argparse.Namespace) -> int | None:
    """``up`` and ``verify`` start the targets once: one ``--workers`` value, checked against the CPUs."""
    if not args.workers:
        return None
    if len(args.workers) > 1:
        raise BenchlabError(f"`benchlab {args.command}` takes one --workers value; `benchlab run` sweeps a list")
    from benchlab.cpus import RoleCpus, check_workers

    check_workers(args.workers, RoleCpus.from_env())
    return args.workers[0]


def _claims_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--claims", type=Path, help="YAML file of claims to check (default: the bundled claims.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start Postgres and the targets, print their URLs, wait for Ctrl-C")
    _targets_args(p)
    _native_args(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("targets", help="list every known target, marking those a plain run measures")
    _targets_args(p, default="all")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("verify", help="check every target x test against the TechEmpower contract")
    _targets_args(p)
    _native_args(p)
    p.add_argument("--tests", help="comma-separated tests (default: all)")
    p.add_argument("--dsn", default=settings().dsn, help="Postgres DSN: values and query counts")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("run", help="verify, then load-test the targets with a scenario")
    _targets_args(p)
    _native_args(p)
    p.add_argument("--scenario", default=os.environ.get("SCENARIO", "smoke"), help="scenario name or YAML file")
    p.add_argument("--out", default=settings().out, help="results directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run")
    p.add_argument("--tests", help="comma-separated tests (default: the scenario's)")
    p.add_argument("--dsn", default=settings().dsn, help="Postgres DSN for verification")
    p.add_argument(
        "--python", type=_versions, metavar="V[,V...]",
        help="run the targets on each of these Pythons, e.g. 3.11,3.13,3.14t (native: python3.13 on PATH or "
        "BENCHLAB_PYTHON_3_13=/path; default: the scenario's, else benchlab's own)",
    )  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument(
        "--profile", action="store_true", default=os.environ.get("PROFILE") == "1",
        help="after each test, one more step at its peak with py-spy attached (also PROFILE=1)",
    )  # fmt: skip
    _claims_arg(p)
    add_hosts_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.html, PNG charts and summary.csv for a run")
    p.add_argument("run_dir", type=Path)
    _claims_arg(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two runs, benchstat-style")
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument(
        "--fail-above", type=float, metavar="PCT",
        help="exit 1 on a significant (Benjamini-Hochberg adjusted) regression above PCT %%",
    )  # fmt: skip
    p.add_argument("--csv", type=Path, help="where to write the table as CSV (default: RUN_B/compare.csv)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("profile", help="CPU per request by component and function: one target against another")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--target", required=True, help="the target to explain")
    p.add_argument("--vs", required=True, metavar="TARGET", help="the target it is set against")
    p.add_argument("--test", required=True)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("profile-agent", help="py-spy beside one target, driven by the loadgen over loopback "
                       "(the sidecars of compose.profile.yaml)")  # fmt: skip
    p.add_argument("--port", type=int, required=True, help="where to listen, on 127.0.0.1")
    p.add_argument("--target-pid", type=int, default=1,
                   help="the target's master, probed at start (default 1: the target's, in its PID namespace)")
    p.set_defaults(func=cmd_profile_agent)

    p = sub.add_parser("calibrate", help="measure the load engine's ceiling against a trivial server")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--vs", type=Path, metavar="RUN_DIR", help="a run whose fastest target sets the headroom ratio")
    p.set_defaults(func=cmd_calibrate)
    return parser


def _selected(args: argparse.Namespace) -> list:
    from benchlab.targets import load_targets, parse_overrides, split_names

    return load_targets(split_names(args.targets), parse_overrides(args.target))


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping", file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    if not args.native:
        raise BenchlabError("`benchlab up` starts the lab natively: add --native (or use `docker compose up`)")
    from benchlab.cpus import RoleCpus
    from benchlab.harness import NativeLab

    with NativeLab(_selected(args), cpus=RoleCpus.from_env(), workers=one_workers_value(args)) as lab:
        for t in lab.targets:
            print(f"{t.name} {t.url}", flush=True)
        print(lab.dsn, flush=True)
        print("ready", flush=True)
        _wait_for_signal()
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from benchlab.targets import describe_targets, load_targets, parse_overrides, split_names

    # every known target by default (marked when a plain run measures it), so the matrix is visible
    print(describe_targets(load_targets(split_names(args.targets) or ["all"], parse_overrides(args.target))))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from benchlab.commands import verify_command

    return verify_command(args)


def cmd_run(args: argparse.Namespace) -> int:
    from benchlab.commands import run_command
    from benchlab.hosts.lab import prepare

    prepare(args)  # --hosts: the targets' URLs and the DSN on their hosts

    return run_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    from benchlab.report.build import build_report

    print(build_report(args.run_dir, claims_path=args.claims))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from benchlab.comparison import COMPARE_CSV, compare_runs

    out_csv: Path = args.csv or args.run_b / COMPARE_CSV
    result = compare_runs(args.run_a, args.run_b, args.fail_above, out_csv)
    print(result.render_text())
    print(f"wrote {out_csv}")
    return result.exit_code


def cmd_profile(args: argparse.Namespace) -> int:
    from benchlab.profiling.diff import profile_diff

    profile_diff(args.run_dir, args.target, args.vs, args.test)
    return 0


def cmd_profile_agent(args: argparse.Namespace) -> int:
    from benchlab.profiling.agent import serve

    serve(args.port, args.target_pid)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from benchlab.commands import calibrate_command

    return calibrate_command(args)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (docker stop, kill) unwinds like Ctrl-C, so servers stop and results are kept."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return func(args)
    except BenchlabError as exc:
        print(f"benchlab: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the machine failed us (a full disk, no file descriptors left): still one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"benchlab: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("benchlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
