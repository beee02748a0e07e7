"""``--hosts``, ``--bind`` and ``--cpuset``: which Docker endpoint, address and CPU set each role gets.

Checked before anything starts, each problem one line. The load generator is this process:
it measures from where the command runs, so ``loadgen=URL`` must name this machine's engine
or be left out (a remote load generator would need this process moved there; run it there).
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from benchlab.cpus import cpuset_cpus, format_cpuset
from benchlab.errors import BenchlabError

REMOTE_ROLES = ("db", "targets")
SCHEMES = ("unix", "tcp", "ssh")


@dataclass(frozen=True)
class HostSpec:
    role: str
    url: str  # the Docker endpoint, as Docker writes it
    address: str  # where the role listens and the others reach it
    cpuset: str | None  # None: not pinned


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hosts", metavar="ROLE=URL,...",
        help="run the database and targets on Docker hosts: db=URL,targets=URL (ssh://user@host, "
        "tcp://host:2376 with TLS from DOCKER_CERT_PATH, unix:///path); this machine is the load generator",
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


def _is_local(url: str) -> bool:
    default = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return url in (default, "unix:///var/run/docker.sock", "unix:///run/docker.sock")


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
    if "loadgen" in urls and not _is_local(urls["loadgen"]):
        raise BenchlabError(
            f"--hosts loadgen={urls['loadgen']}: the load generator is the machine running this command; "
            "run benchlab there (or leave loadgen out)"
        )
    binds, cpusets = _pairs(args.bind, "--bind"), _pairs(args.cpuset, "--cpuset")
    specs = {}
    for role in REMOTE_ROLES:
        url = _check_url(role, urls[role])
        address = binds.get(role) or urlsplit(url).hostname
        if not address:
            raise BenchlabError(f"--hosts {role}={url}: a unix:// host needs its address: --bind {role}=ADDR")
        try:
            socket.getaddrinfo(address, None)
        except OSError:
            raise BenchlabError(f"--bind {role}={address}: not an address this machine can resolve") from None
        cpuset = cpusets.get(role)
        if cpuset is not None:
            try:
                cpuset = format_cpuset(cpuset_cpus(cpuset)) or None
            except ValueError:
                cpuset = None
            if cpuset is None:
                raise BenchlabError(f"--cpuset {role}={cpusets[role]}: not a cpuset like '0-3' or '0,2'")
        specs[role] = HostSpec(role, url, address, cpuset)
    return specs
