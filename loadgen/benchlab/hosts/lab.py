"""The split lab: the database (with the upstream service beside it, as compose.split.yaml puts
it) and the targets started on their Docker hosts, watched during the run, and removed from
every host however it ends. With ``loadgen=URL`` the database host also gets ``hosts.dbstats``
and the loadgen host the loadgen image; ``hosts.remote`` runs the load generator there.

``prepare`` runs before the targets are chosen (their URLs are the targets host's address,
the DSN the database host's); ``hosts_lab`` is the lab ``lab.open_lab`` yields for
``--hosts``. What run.json gets under ``hosts``: each role's host (hardware, kernel, Docker,
CPU set, image IDs, the containers and their host PIDs), the round-trip times measured at the
start, the database's peak memory, and any host lost during the run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.hosts import dbstats, images, network
from benchlab.hosts.engine import ENGINE_ERRORS, Engine, _why
from benchlab.hosts.spec import HostSpec, parse
from benchlab.hosts.stats import ContainerCpu
from benchlab.targets import Target, load_targets

HEALTHY_TIMEOUT_S = float(os.environ.get("BENCHLAB_READY_TIMEOUT", "180"))
WATCH_INTERVAL_S = 2.0
DB_DEFAULTS = {"BENCHLAB_DB_USER": "benchmarkdbuser", "BENCHLAB_DB_PASSWORD": "benchmarkdbpass",
               "BENCHLAB_DB_NAME": "hello_world", "BENCHLAB_DB_PORT": "5432"}  # fmt: skip
# The knobs compose passes to every target when set (compose.yaml's x-target-env).
TARGET_KNOBS = ("BENCHLAB_WORKERS", "BENCHLAB_DB_POOL", "BENCHLAB_MAX_DB_CONNECTIONS", "BENCHLAB_DB_WAIT_S")


def _db(key: str) -> str:
    return os.environ.get(key) or DB_DEFAULTS[key]


def upstream_port() -> str:
    return settings().upstream_port


def db_stats_port() -> str:
    return settings().db_stats_port


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def dsn_for(spec: HostSpec) -> str:
    return (f"postgresql://{_db('BENCHLAB_DB_USER')}:{_db('BENCHLAB_DB_PASSWORD')}@{_url_host(spec.address)}:"
            f"{_db('BENCHLAB_DB_PORT')}/{_db('BENCHLAB_DB_NAME')}")  # fmt: skip


def prepare(args: argparse.Namespace) -> None:
    """For ``--hosts``: the options checked (one line each), every target's URL on the targets host
    (explicit ``--target`` URLs still win) and the DSN on the database host; mode ``hosts``."""
    specs = parse(args)
    if not specs:
        return
    address = _url_host(specs["targets"].address)
    given = {item.partition("=")[0] for item in args.target}
    args.target = [*args.target, *(f"{t.name}=http://{address}:{t.port}" for t in load_targets(["all"])
                                   if t.name not in given)]  # fmt: skip
    args.dsn = dsn_for(specs["db"])
    args.host_specs = specs
    os.environ["BENCHLAB_MODE"] = "hosts"  # what run.json records, and what --resume checks


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class HostsLab:
    """The run's engines and containers, and the record run.json keeps of them."""

    def __init__(self, specs: dict[str, HostSpec], targets: list[Target]) -> None:
        self.token = uuid.uuid4().hex[:10]
        self.targets = targets
        self.record: dict[str, Any] = {"token": self.token, "lost": {}}
        self.engines = {role: Engine(spec, self.token) for role, spec in specs.items()}  # unreachable: one line
        for engine in self.engines.values():
            engine.check_cpuset()
        for role, engine in self.engines.items():
            self.record[role] = {**engine.describe(), "containers": {}}
        from benchlab.metadata import host_info

        # this machine, the load generator (its CPU set: BENCHLAB_CPUS_LOADGEN, as in every mode)
        if "loadgen" not in self.engines:
            self.record["loadgen"] = {**host_info(), "cpuset": os.environ.get("BENCHLAB_CPUS_LOADGEN") or "not pinned"}
        else:  # the load generator is a container there; this machine only coordinates
            self.record["coordinator"] = host_info()
        db = self.engines["db"].spec
        self.upstream_url = f"http://{_url_host(db.address)}:{upstream_port()}"
        self.db_stats_url = f"http://{_url_host(db.address)}:{db_stats_port()}" if self.remote_loadgen else None
        self.db_cpu: ContainerCpu | None = None
        self._stop = threading.Event()

    @property
    def remote_loadgen(self) -> bool:
        return "loadgen" in self.engines

    def start(self) -> None:
        builder = images.builder()
        tags = {"db": [images.db_image(), images.upstream_image()],
                "targets": sorted({images.target_image(t) for t in self.targets})}  # fmt: skip
        if self.remote_loadgen:
            tags["loadgen"] = [images.loadgen_image()]
        ids = images.ensure_built(builder, sorted({t for role in tags.values() for t in role}), _say)
        for role, role_tags in tags.items():
            self.record[role]["images"] = images.distribute(builder, ids, self.engines[role], role_tags, _say)
        db = self._start_db()
        self._start_upstream()
        if self.remote_loadgen:
            self._start_db_stats(db)
        for t in self.targets:
            self._start_target(t)
        for role, engine in self.engines.items():
            for c in engine.ours():
                engine.wait_healthy(c, HEALTHY_TIMEOUT_S)
                c.reload()
                self.record[role]["containers"][c.name] = {"id": c.id[:12], "pid": c.attrs["State"]["Pid"]}
        self.record["db"]["upstream"] = self.upstream_url
        self.db_cpu = ContainerCpu(db)
        self._measure_rtt()
        threading.Thread(target=self._watch, name="benchlab-hosts-watch", daemon=True).start()

    def _start_db(self) -> Any:
        engine = self.engines["db"]
        _say(f"db host {engine.spec.url}: starting Postgres on {engine.spec.address}:{_db('BENCHLAB_DB_PORT')}")
        env = {
            "POSTGRES_USER": _db("BENCHLAB_DB_USER"), "POSTGRES_PASSWORD": _db("BENCHLAB_DB_PASSWORD"),
            "POSTGRES_DB": _db("BENCHLAB_DB_NAME"), "PGPORT": _db("BENCHLAB_DB_PORT"),
            "BENCHLAB_BIND": engine.spec.address,
        }  # fmt: skip
        return engine.run("db", images.db_image(), None, env, shm_size="256m")

    def _start_upstream(self) -> None:
        """What the targets' ``GET /upstream`` waits on, beside the database (compose.split.yaml's place)."""
        engine = self.engines["db"]
        _say(f"db host {engine.spec.url}: starting the upstream on {engine.spec.address}:{upstream_port()}")
        env = {"BENCHLAB_HOST": engine.spec.address, "BENCHLAB_UPSTREAM_PORT": upstream_port()}
        engine.run("upstream", images.upstream_image(), None, env, cap_drop=["ALL"],
                   security_opt=["no-new-privileges:true"])  # fmt: skip

    def _start_db_stats(self, db: Any) -> None:
        """``hosts.dbstats`` in the database's PID namespace, unprivileged: the remote loadgen's view of
        the database's CPU (it runs in the upstream image, which has Python and is on this host)."""
        import inspect

        engine = self.engines["db"]
        env = {"BENCHLAB_HOST": engine.spec.address, "BENCHLAB_UPSTREAM_PORT": db_stats_port()}
        engine.run("db-stats", images.upstream_image(), ["python", "-I", "-c", inspect.getsource(dbstats)], env,
                   pid_mode=f"container:{db.id}", user="10001:10001", cap_drop=["ALL"],
                   security_opt=["no-new-privileges:true"])  # fmt: skip

    def _start_target(self, t: Target) -> None:
        engine = self.engines["targets"]
        _say(f"targets host {engine.spec.url}: starting {t.name} on {engine.spec.address}:{t.port}")
        env = {
            "DATABASE_URL": dsn_for(self.engines["db"].spec), "BENCHLAB_HOST": engine.spec.address,
            "BENCHLAB_PORT": str(t.port), "UPSTREAM_URL": self.upstream_url,
            **{k: os.environ[k] for k in TARGET_KNOBS if os.environ.get(k)},
        }  # fmt: skip
        engine.run(t.name, images.target_image(t), list(t.command), env)

    def _measure_rtt(self) -> None:
        db, targets = self.engines["db"].spec, self.engines["targets"].spec
        port = int(_db("BENCHLAB_DB_PORT"))
        first = next((c for c in self.engines["targets"].ours()), None)
        if self.remote_loadgen:  # from the loadgen host: a probe container of its image there
            loadgen = self.engines["loadgen"]
            probe = lambda host, p: network.rtt_from_host(loadgen, images.loadgen_image(), host, p)  # noqa: E731
        else:
            probe = network.connect_rtt_ms
        rtt = {
            "loadgen-targets": probe(targets.address, self.targets[0].port) if self.targets else None,
            "loadgen-db": probe(db.address, port),
            "targets-db": network.rtt_in_container(first, db.address, port) if first is not None else None,
        }
        self.record["rtt_ms"] = rtt
        _say(f"network round trip (median TCP connect): {network.describe_rtt(rtt)}")

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            self._check_alive()
            if self.remote_loadgen and self.db_cpu is not None:  # the database's memory peak: no sampler here
                self.db_cpu()

    def _check_alive(self) -> None:
        """One line, once, for a host whose engine stops answering; run.json records when."""
        for role, engine in self.engines.items():
            if role not in self.record["lost"] and not engine.alive():
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self.record["lost"][role] = when
                what = ("the rows copied here before are kept" if role == "loadgen" else
                        "its steps from then on are errors")  # fmt: skip
                _say(f"benchlab: the {role} host ({engine.spec.url}) stopped answering at {when}; "
                     f"{what}, and what ran there could not be removed")  # fmt: skip

    def stop(self) -> None:
        """Removes this run's containers from every host; an unreachable host is one line, not a stop."""
        self._stop.set()
        self._check_alive()  # a host lost after the watch's last look is still named
        if self.db_cpu is not None:
            self.record["db"]["memory_peak_mb"] = self.db_cpu.memory_peak_mb
        cleanup: dict[str, Any] = {}
        for role, engine in self.engines.items():
            try:
                cleanup[role] = {"removed": engine.remove_ours()}
            except ENGINE_ERRORS as exc:
                cleanup[role] = {"error": _why(exc)}
                if role not in self.record["lost"]:  # a lost host has had its line
                    label = f"org.benchlab.run={self.token}"
                    _say(f"benchlab: could not remove this run's containers from the {role} host "
                         f"({engine.spec.url}): {_why(exc)}; they carry the label {label}")  # fmt: skip
        self.record["cleanup"] = cleanup

    def annotate(self, meta: dict[str, Any]) -> None:
        """Puts the live record into run.json's ``hosts``; a resumed run keeps the earlier hosts."""
        if "hosts" in meta and meta["hosts"] is not self.record:
            meta.setdefault("hosts_earlier", []).append(meta["hosts"])
        meta["hosts"] = self.record
        cpus = meta.setdefault("cpus", {})
        for role, engine in self.engines.items():  # not this machine's CPUs: the role's on its host
            given = engine.spec.cpuset or f"0-{(engine.info.get('NCPU') or 1) - 1}"
            cpus[role] = f"{given} of {engine.info.get('NCPU')} on the {role} host"


@contextmanager
def signals_held() -> Iterator[None]:
    """Cleanup is not cut short by a second Ctrl-C or SIGTERM (in the main thread, where they land)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def started(specs: dict[str, HostSpec], targets: list[Target]) -> Iterator[HostsLab]:
    """The roles started on their hosts and healthy; everything removed again however it ends."""
    lab = HostsLab(specs, targets)
    try:
        lab.start()
        yield lab
    except ENGINE_ERRORS as exc:
        raise BenchlabError(f"a Docker host failed: {_why(exc)}") from None
    finally:
        with signals_held():
            lab.stop()


@contextmanager
def hosts_lab(args: argparse.Namespace, targets: list[Target]) -> Iterator[Any]:
    """The Lab the runner measures from this machine, the load generator's host."""
    from benchlab.lab import Lab, wait_ready
    from benchlab.metadata import database_info

    with started(args.host_specs, targets) as lab:
        wait_ready(targets, HEALTHY_TIMEOUT_S)
        yield Lab(targets, args.dsn, lab.db_cpu, "hosts", database_info(args.dsn), annotate=lab.annotate,
                  upstream_url=lab.upstream_url)  # fmt: skip
