"""The target registry: which servers the lab measures and where they listen.

The list lives in ``targets.toml`` beside this module. Where a target listens is
resolved from, in order: an explicit ``NAME=URL`` override (``--target``), the
environment (``BENCHLAB_URL_<NAME>``, then ``BENCHLAB_TARGET_HOST`` + the port in
``BENCHLAB_PORT_<NAME>``), and the registry's default port on 127.0.0.1.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.validate import Checker

REGISTRY = Path(__file__).with_name("targets.toml")


@dataclass(frozen=True)
class Target:
    name: str
    framework: str
    server: str
    worker_class: str
    interface: str
    style: str
    group: str
    service: str
    port: int
    command: tuple[str, ...]
    url: str

    def answers(self, timeout_s: float = 2) -> bool:
        """Whether the server answers ``/json`` with 200 now: the one readiness probe."""
        try:
            return httpx.get(self.url + "/json", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def answers_within(self, bound_s: float, probe_s: float = 3) -> float | None:
        """Seconds until ``/json`` answers 200, or None: at once when nothing accepts the
        connection (the server is gone), else after ``bound_s`` of a server that accepts but
        does not answer (still busy, e.g. with a previous load's queued pipelined requests)."""
        start = time.monotonic()
        while True:
            try:
                if httpx.get(self.url + "/json", timeout=probe_s).status_code == 200:
                    return time.monotonic() - start
            except httpx.ConnectError:
                return None
            except httpx.HTTPError:
                pass
            if time.monotonic() - start >= bound_s:
                return None
            time.sleep(0.2)

    @property
    def env_key(self) -> str:
        """``flask-gunicorn-gevent`` -> ``FLASK_GUNICORN_GEVENT`` for env overrides."""
        return self.name.upper().replace("-", "_")


STYLES = ("tfb", "idiomatic", "bare")
INTERFACES = ("wsgi", "asgi")
# The sets --targets and scenario files may name, besides "all" and single targets. "core" is
# the default: the three targets plain `docker compose up` runs; the others are the matrix.
GROUPS = ("core", "servers", "style", "baselines")
DEFAULT_SELECTION = "core"
_TEXT_FIELDS = ("framework", "server", "worker_class", "interface", "style", "group", "service")


def _registry(path: Path = REGISTRY) -> dict[str, Target]:
    """The registry, checked: a malformed entry names its key, and two targets never share a port."""
    c = Checker(path.name)
    targets: dict[str, Target] = {}
    for name, value in tomllib.loads(path.read_text()).items():
        entry = c.mapping(value, name, (*_TEXT_FIELDS, "port", "command"), (*_TEXT_FIELDS, "port", "command"))
        fields = {f: c.text(entry[f], f"{name}.{f}") for f in _TEXT_FIELDS}
        c.choice(fields["style"], f"{name}.style", STYLES)
        c.choice(fields["interface"], f"{name}.interface", INTERFACES)
        c.choice(fields["group"], f"{name}.group", GROUPS)
        port = c.pos_int(entry["port"], f"{name}.port")
        taken = next((t.name for t in targets.values() if t.port == port), None)
        if taken or port > 65535:
            raise c.error(f"{name}.port", f"{port} is taken by {taken}" if taken else "expected a TCP port")
        words = c.items(entry["command"], f"{name}.command", "words")
        command = tuple(c.text(part, f"{name}.command") for part in words)
        targets[name] = Target(name=name, **fields, port=port, command=command, url=f"http://127.0.0.1:{port}")
    return targets


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["NAME=URL", ...]`` -> ``{NAME: URL}``; malformed items are a user error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise BenchlabError(f"--target expects NAME=http://HOST:PORT, got {item!r}")
        try:
            parsed = httpx.URL(url)
            port = parsed.port
        except (httpx.InvalidURL, ValueError):
            raise BenchlabError(f"--target {item!r}: not a valid URL") from None
        if not parsed.host or (port is not None and not 1 <= port <= 65535):
            raise BenchlabError(f"--target {item!r}: expected a host and a port from 1 to 65535")
        out[name.strip()] = url.rstrip("/")
    return out


def _port(raw: str, where: str) -> int:
    """A TCP port from the environment; anything but 1..65535 is a user error, not a long wait."""
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise BenchlabError(f"{where}: expected a port from 1 to 65535, got {raw!r}")
    return port


def registry_names() -> list[str]:
    """Every registered target, in registry order."""
    return list(_registry())


def selection_error(item: str) -> str | None:
    """Why ``item`` names no target or group (None when it does): the one wording everywhere."""
    registry = _registry()
    if item == "all" or item in GROUPS or item in registry:
        return None
    return f"unknown target or group {item!r}; groups: all, {', '.join(GROUPS)}; targets: {', '.join(registry)}"


def select(items: Iterable[str] | None = None) -> list[str]:
    """Target names for ``items``: names, groups (``core``, ``servers``, ...) or ``all``, in any
    mix, in registry order; nothing selects the default group (``core``)."""
    wanted = set(items or [DEFAULT_SELECTION])
    registry = _registry()
    problems = [p for p in map(selection_error, sorted(wanted)) if p]
    if problems:
        raise BenchlabError(problems[0])
    return [n for n, t in registry.items() if {"all", t.group, n} & wanted]


def load_targets(
    names: Iterable[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Target]:
    """The targets ``names`` selects (see ``select``: default the core group), in registry
    order, with URLs resolved."""
    given = settings(env)
    overrides = dict(overrides or {})
    registry = _registry()
    selected = select(names)
    unknown = [n for n in overrides if n not in registry]
    if unknown:
        raise BenchlabError(f"--target {unknown[0]!r}: unknown target; targets: {', '.join(registry)}")
    host = given.target_host
    out = []
    for name, target in registry.items():
        if name not in selected:
            continue
        raw = given.target_port(target.env_key)
        port = _port(raw, f"BENCHLAB_PORT_{target.env_key}") if raw else target.port
        url = overrides.get(name) or given.target_url(target.env_key) or f"http://{host}:{port}"
        out.append(replace(target, port=port, url=url.rstrip("/")))
    return out


def split_names(value: str | None, option: str = "--targets") -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; None (the option not given) -> ``[]``, meaning the default. A given
    value naming nothing (``--targets ''``) is a user error, not a silent "all"."""
    if value is None:
        return []
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise BenchlabError(f"{option}: expected comma-separated names, got {value!r}")
    return names


def describe_targets(targets: Iterable[Target], env: Mapping[str, str] | None = None) -> str:
    """The ``benchlab targets`` table: name, whether a plain run measures it (the default group,
    marked ``*``), framework, server, worker class, interface, style, group, workers, URL."""
    workers = settings(env).workers or f"auto ({len(os.sched_getaffinity(0))} CPUs here)"
    header = ("NAME", "PLAIN RUN", "FRAMEWORK", "SERVER", "WORKER CLASS", "INTERFACE", "STYLE", "GROUP", "WORKERS")
    header += ("URL",)
    rows = [header]
    rows += [
        (t.name, "*" if t.group == DEFAULT_SELECTION else "", t.framework, t.server, t.worker_class,
         t.interface, t.style, t.group, workers, t.url)
        for t in targets
    ]  # fmt: skip
    footer = f"* measured by a plain run (the {DEFAULT_SELECTION} group); the others: --targets all or a group name"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([*table, "", footer])
