"""``--hosts``, ``--bind`` and ``--cpuset``: which Docker endpoint, address and CPU set each role gets.

Checked before anything starts, each problem one line. Without ``loadgen=URL`` the load
generator is this process, measuring from where the command runs; with it, the load generator
is a container on that host (``hosts.remote``) and this process only coordinates: it starts the
roles, hands the run over and brings its results back.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from benchlab.cpus import cpuset_cpus, format_cpuset
from benchlab.errors import BenchlabError

REMOTE_ROLES = ("db", "targets")  # always on Docker hosts; loadgen only when given
SCHEMES = ("unix", "tcp", "ssh")


@dataclass(frozen=True)
class HostSpec:
    role: str
    url: str  # the Docker endpoint, as Docker writes it
    address: str  # where the role listens and the others reach it ("" for a loadgen: it listens nowhere)
    cpuset: str | None  # None: not pinned


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hosts", metavar="ROLE=URL,...",
        help="run the database and targets on Docker hosts: db=URL,targets=URL[,loadgen=URL] (ssh://user@host, "
        "tcp://host:2376 with TLS from DOCKER_CERT_PATH, unix:///path); without loadgen=URL this machine is "
        "the load generator, with it the load generator runs there and the results come back here",
    )  # fmt: skip
    p.add_argument(
        "--bind", action="append", default=[], metavar="ROLE=ADDR",
        help="with --hosts: the address a role listens on and is reached at (default: the URL's host)",
    )  # fmt: skip
    p.add_argument(
        "--cpuset", action="append", default=[], metavar="ROLE=CPUS",
        help="with --hosts: the CPUs a role gets on its host, e.g. targets=2-5 (default: not pinned)",
    )  # fmt: skip


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        role, sep, value = item.partition("=")
        role, value = role.strip(), value.strip()
        if not sep or not value:
            raise BenchlabError(f"{option}: expected ROLE=VALUE, got {item!r}")
        if role not in (*REMOTE_ROLES, "loadgen"):
            raise BenchlabError(f"{option}: unknown role {role!r}; roles: db, targets, loadgen")
        if role in out:
            raise BenchlabError(f"{option}: {role} given twice")
        out[role] = value
    return out


def _check_url(role: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise BenchlabError(f"--hosts {role}={url}: expected ssh://user@host, tcp://host:2376 or unix:///path")
    if parts.scheme == "unix" and not parts.path:
        raise BenchlabError(f"--hosts {role}={url}: a unix:// endpoint needs a socket path (unix:///path)")
    if parts.scheme != "unix" and not parts.hostname:
        raise BenchlabError(f"--hosts {role}={url}: no host name")
    if parts.scheme == "tcp":
        certs = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
        missing = [f for f in ("ca.pem", "cert.pem", "key.pem") if not os.path.isfile(os.path.join(certs, f))]
        if missing:
            raise BenchlabError(
                f"--hosts {role}={url}: tcp:// is used with TLS only, and {certs} lacks {', '.join(missing)} "
                "(set DOCKER_CERT_PATH to the folder of your client certificates)"
            )
    return url


def parse(args: argparse.Namespace) -> dict[str, HostSpec]:
    """The remote roles' specs from the parsed options; a user error names the option."""
    if not args.hosts:
        if args.bind or args.cpuset:
            raise BenchlabError("--bind and --cpuset go with --hosts")
        return {}
    if getattr(args, "native", False):
        raise BenchlabError("--hosts and --native exclude each other: --native starts the lab on this machine")
    urls = _pairs([i for i in args.hosts.split(",") if i.strip()], "--hosts")
    missing = [r for r in REMOTE_ROLES if r not in urls]
    if missing:
        raise BenchlabError(f"--hosts: no {' or '.join(missing)} host; expected db=URL,targets=URL[,loadgen=URL]")
    binds, cpusets = _pairs(args.bind, "--bind"), _pairs(args.cpuset, "--cpuset")
    specs = {}
    for role in (*REMOTE_ROLES, *(["loadgen"] if "loadgen" in urls else [])):
        url = _check_url(role, urls[role])
        address = binds.get(role) or urlsplit(url).hostname or ""
        if role == "loadgen":  # it connects out only; an address is a label in run.json
            specs[role] = HostSpec(role, url, address, _cpuset(role, cpusets))
            continue
        if not address:
            raise BenchlabError(f"--hosts {role}={url}: a unix:// host needs its address: --bind {role}=ADDR")
        try:
            socket.getaddrinfo(address, None)
        except OSError:
            raise BenchlabError(f"--bind {role}={address}: not an address this machine can resolve") from None
        specs[role] = HostSpec(role, url, address, _cpuset(role, cpusets))
    if "loadgen" not in specs and ("loadgen" in binds or "loadgen" in cpusets):
        raise BenchlabError("--bind and --cpuset loadgen=... go with --hosts ...,loadgen=URL (this machine's "
                            "load generator is pinned by BENCHLAB_CPUS_LOADGEN)")  # fmt: skip
    return specs


def _cpuset(role: str, cpusets: dict[str, str]) -> str | None:
    """The role's CPU set, normalised ('0-3'); None when not given (not pinned)."""
    raw = cpusets.get(role)
    if raw is None:
        return None
    try:
        cpuset = format_cpuset(cpuset_cpus(raw)) or None
    except ValueError:
        cpuset = None
    if cpuset is None:
        raise BenchlabError(f"--cpuset {role}={raw}: not a cpuset like '0-3' or '0,2'")
    return cpuset
