"""The yardstick's command line: its options, a ``--pair`` from ``yardstick/pairs.toml`` filled
in, and every option checked before anything starts (``scripts/yardstick.py`` runs it)."""

from __future__ import annotations

import argparse
import os
import shlex
import tomllib
from pathlib import Path
from typing import NoReturn

from yardstick_theirs import log

from benchlab.contract import TEST_TYPES, TESTS
from benchlab.errors import BenchlabError
from benchlab.harness import repo_root
from benchlab.targets import split_names

PAIRS_FILE = Path(__file__).with_name("yardstick") / "pairs.toml"
PAIRS = tomllib.loads(PAIRS_FILE.read_text())


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (exit 2) instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"yardstick: {message} (see --help)\n")


def parse_args(argv: list[str], description: str) -> argparse.Namespace:
    p = Parser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
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
