"""``benchlab run --hosts`` across three machines made of network namespaces (tests/netns_hosts.py).

Each host is a namespace with its own Docker engine. The smoke run uses ``loadgen=URL``: the
command runs outside the three (a laptop driving three machines), the load generator runs in its
container on the loadgen host and reaches the database, the upstream and the targets only over
the veth network the test made, and the results come back to the command's ``--out``; so does
the SIGTERM-then-resume run. The failing-role and dying-host runs keep the load generator in the
command's own process, run inside the loadgen namespace, driving the database host's engine
through ``unix://`` and the targets host's through ``tcp://...:2376`` with TLS over that
network. Checked: the rows, run.json's record of every host, that each role's processes ran in
its namespace, that SIGTERM and a host whose engine dies mid-run give an honest status and a
valid CSV, that --resume finishes, and that nothing is left (no container, namespace,
interface or engine). ``ssh://`` is not covered here (no sshd on this machine): the Docker SDK
makes the same calls through the same client as for ``unix://``; only the transport differs,
the same HTTP over an ``ssh ... docker system dial-stdio`` child process (hosts/engine.py
``_client``). The static tests (no Docker) check ``--hosts``' one-line refusals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import assert_healthy_rows, read_csv, run_benchlab
from netns_hosts import ThreeHosts, netns_of, unusable

import benchlab
from benchlab.contract import TFB_TESTS as TESTS  # the built-in scenarios run TechEmpower's tests
from benchlab.report.plotting import context_line
from benchlab.targets import load_targets

CORE = [t.name for t in load_targets(env={})]


# --- static: bad --hosts input is one line, before anything starts ----------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--hosts", "db=unix:///x.sock"], "--hosts: no targets host"),
        (["--hosts", "db=http://a,targets=unix:///y"], "expected ssh://user@host, tcp://host:2376 or unix:///path"),
        (["--hosts", "db=unix:///x,targets=unix:///y"], "a unix:// host needs its address: --bind db=ADDR"),
        (
            ["--hosts", "db=ssh://127.0.0.2,targets=ssh://127.0.0.3", "--cpuset", "loadgen=0"],
            "go with --hosts ...,loadgen=URL",
        ),
        (["--hosts", "db=ssh://127.0.0.2,targets=ssh://127.0.0.3,loadgen=http://x"], "expected ssh://user@host"),
        (["--hosts", "db=ssh://127.0.0.2,targets=ssh://127.0.0.3", "--cpuset", "db=x"], "not a cpuset"),
        (["--bind", "db=127.0.0.1"], "--bind and --cpuset go with --hosts"),
        (["--hosts", "db=ssh://127.0.0.2,targets=ssh://127.0.0.3", "--native"], "exclude each other"),
    ],
)
def test_bad_hosts_options_are_one_line(argv: list[str], expected: str, tmp_path: Path):
    proc = run_benchlab("run", "--scenario", "smoke", "--out", str(tmp_path), *argv, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not list(tmp_path.iterdir())  # no run started


def test_an_unreachable_engine_is_one_line(tmp_path: Path):
    proc = run_benchlab(
        "run", "--scenario", "smoke", "--out", str(tmp_path), "--hosts",
        f"db=unix://{tmp_path}/none.sock,targets=unix://{tmp_path}/none.sock", "--bind", "db=127.0.0.1",
        "--bind", "targets=127.0.0.1", timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("benchlab:")]
    assert "db host unix://" in line and "does not answer" in line, proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("*/run.json"))


def test_a_split_runs_figures_carry_the_round_trip_times():
    """The line under every chart and atop the report: the network floor of a split run, and nothing
    extra for a run on one machine."""
    meta = {"mode": "hosts", "run_id": "r1", "hosts": {"rtt_ms": {"loadgen-targets": 0.084, "targets-db": None}}}
    line = context_line(meta)
    assert line.endswith("| network round trip: loadgen-targets 0.084 ms, targets-db –"), line
    assert "network round trip" not in context_line({"mode": "compose", "run_id": "r2"})


def test_the_database_cpu_reader_sums_pid_1s_tree(tmp_path: Path):
    """hosts.dbstats as the lab runs it (its source as ``python -I -c``): GET /stats answers the
    CPU seconds and memory of PID 1's process tree, which only grow; anything else is a 404."""
    import inspect

    import httpx

    from benchlab.hosts import dbstats
    from benchlab.ports import free_port

    port = free_port()
    env = {"PATH": os.environ["PATH"], "BENCHLAB_HOST": "127.0.0.1", "BENCHLAB_UPSTREAM_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-I", "-c", inspect.getsource(dbstats)], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                first = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert first["cpu_seconds"] > 0 and first["memory_mb"] > 0 and first["pid"] == 1, first
        later = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
        assert later["cpu_seconds"] >= first["cpu_seconds"]
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- docker: three hosts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_hosts() -> Iterator[ThreeHosts]:
    reason = unusable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    hosts = ThreeHosts()
    try:
        yield hosts.create()
    finally:
        hosts.remove()


def hosts_argv(hosts: ThreeHosts, out: Path, *extra: str) -> list[str]:
    db, tg, lg = (hosts.hosts[r] for r in ("db", "targets", "loadgen"))
    return [
        "nsenter", f"--net=/run/netns/{lg.ns}", sys.executable, "-m", "benchlab.cli", "run", "--out", str(out),
        "--no-report", "--hosts", f"db={db.url},targets={tg.tls_url}", "--bind", f"db={db.address}", *extra,
    ]  # fmt: skip


def _clean_env(hosts: ThreeHosts) -> dict[str, str]:
    """Registry ports (each host has its own network), and the client certificates for tcp://."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCHLAB_PORT_", "BENCHLAB_URL_", "DOCKER_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "DOCKER_CERT_PATH": str(hosts.certs)}


def remote_argv(hosts: ThreeHosts, out: Path, *extra: str) -> list[str]:
    """The command outside the three namespaces, every engine through its unix:// socket, the load
    generator on its host (``loadgen=URL``): this machine reaches no host's network."""
    db, tg, lg = (hosts.hosts[r] for r in ("db", "targets", "loadgen"))
    return [
        sys.executable, "-m", "benchlab.cli", "run", "--out", str(out), "--hosts",
        f"db={db.url},targets={tg.url},loadgen={lg.url}", "--bind", f"db={db.address}",
        "--bind", f"targets={tg.address}", *extra,
    ]  # fmt: skip


def _watch_namespaces(hosts: ThreeHosts, proc: subprocess.Popen[str]) -> tuple[dict[str, set[str]], dict[str, Any]]:
    """While the run goes on: in which host's namespace each role's processes are (each engine's
    containers of the run and their children, e.g. wrk under the loadgen), and what the load
    generator's first process is (uid, capabilities, cpuset)."""
    by_inode = {h.netns: h.role for h in hosts.hosts.values()}
    seen: dict[str, set[str]] = {role: set() for role in hosts.hosts}
    loadgen: dict[str, Any] = {"comms": set()}
    while proc.poll() is None:
        for role, host in hosts.hosts.items():
            ids = host.docker("ps", "-q", "--filter", "label=org.benchlab.run", timeout=30).stdout.split()
            for cid in ids:
                pid = host.docker("inspect", "-f", "{{.State.Pid}}", cid, timeout=30).stdout.strip()
                if not pid.isdigit() or int(pid) == 0:
                    continue  # stopped meanwhile
                for p in [int(pid), *_children(int(pid))]:
                    ns = netns_of(p)  # None: it ended meanwhile
                    if ns is not None:
                        seen[role].add(by_inode.get(ns, "elsewhere"))
                    if role == "loadgen":
                        loadgen["comms"].add(_comm(p))
                        status = _status(p)
                        if status and _comm(p) == "benchlab":
                            loadgen.update(uid=status.get("Uid"), cap_eff=status.get("CapEff"),
                                           cpus=status.get("Cpus_allowed_list"))  # fmt: skip
        time.sleep(1)
    return seen, loadgen


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out] + [c for p in out for c in _children(int(p))]


@pytest.mark.docker
def test_smoke_across_three_hosts_with_a_remote_loadgen(three_hosts: ThreeHosts, tmp_path: Path):
    """The smoke scenario and the upstream test, one target (the others add time, not paths), the
    load generator on the loadgen host: the rows and the report land here, run.json records every
    host, each role ran in its namespace."""
    started = time.monotonic()
    scenario = yaml.safe_load((Path(benchlab.__file__).parent / "scenarios" / "smoke.yaml").read_text())
    scenario["tests"]["upstream"] = {"concurrency": [32], "queries": [20]}
    (tmp_path / "smoke-upstream.yaml").write_text(yaml.safe_dump(scenario))
    out = tmp_path / "results"
    argv = remote_argv(three_hosts, out, "--scenario", str(tmp_path / "smoke-upstream.yaml"), "--targets", CORE[0],
                       "--cpuset", "loadgen=1")  # fmt: skip
    proc = subprocess.Popen(argv, env=_clean_env(three_hosts), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    seen, loadgen = _watch_namespaces(three_hosts, proc)
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out_text + err)[-5000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert (run_dir / "report.html").is_file() and (run_dir / "raw").is_dir()
    rows = read_csv(run_dir)
    assert_healthy_rows([r for r in rows if r["test"] != "upstream"], CORE[:1], TESTS)
    assert all(r["db_cpu_cores"] != "" for r in rows if r["test"] in ("db", "updates")), "the database's CPU"
    (upstream,) = [r for r in rows if r["test"] == "upstream"]  # the targets reached the upstream beside the db
    assert upstream["verification"] == "pass" or "not judged: this machine is busy" in upstream["verification"]
    assert float(upstream["rps"]) > 0 and upstream["errors_status"] == "0" and upstream["upstream_cpu_cores"] != ""
    # each role in its own namespace, and nowhere else; the load generator unprivileged, pinned, wrk under it
    assert seen == {"db": {"db"}, "targets": {"targets"}, "loadgen": {"loadgen"}}, seen
    assert loadgen["uid"].split() == ["10001"] * 4 and int(loadgen["cap_eff"], 16) == 0, loadgen
    assert loadgen["cpus"] == "1" and "wrk" in loadgen["comms"], loadgen
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["mode"] == "hosts"
    assert meta["git_commit"] and not meta["git_commit"].startswith("unknown"), meta["git_commit"]
    hosts = meta["hosts"]
    for role in ("db", "targets", "loadgen"):
        record, host = hosts[role], three_hosts.hosts[role]
        assert record["url"] == host.url, record
        assert record["cpus"] >= 1 and record["kernel"] and record["docker_version"] and record["cpuset"]
        assert record["memory_gb"] > 0 and record["images"]
        assert hosts["cleanup"][role]["removed"], hosts["cleanup"]
    assert hosts["loadgen"]["cpuset"] == "1" and hosts["loadgen"]["exit_code"] == 0
    assert meta["host"]["cores"] >= 1  # what the load generator saw of its host, from inside
    assert hosts["coordinator"]["kernel"], hosts
    assert len(hosts["targets"]["containers"]) == 1
    assert {c.rsplit("-", 2)[-1] for c in hosts["db"]["containers"]} >= {"db", "upstream"}, hosts["db"]["containers"]
    assert hosts["db"]["memory_peak_mb"] > 0
    assert set(hosts["rtt_ms"]) == {"loadgen-targets", "loadgen-db", "targets-db"}
    assert all(ms is not None and 0 < ms < 50 for ms in hosts["rtt_ms"].values()), hosts["rtt_ms"]
    assert all(t["url"].startswith(f"http://{three_hosts.hosts['targets'].address}:") for t in meta["targets"].values())
    assert "network round trip" in err and "Traceback" not in err
    for host in three_hosts.hosts.values():  # nothing of the run left on any engine
        assert host.docker("ps", "-aq").stdout.split() == [], host.role
    print(f"smoke across three hosts (remote loadgen): {time.monotonic() - started:.0f} s")


def _wait_for_rows(run_parent: Path, proc: subprocess.Popen[str], rows: int) -> Path:
    deadline = time.monotonic() + 600
    while True:
        found = [p for p in run_parent.glob("*/results.csv") if len(read_csv(p.parent)) >= rows]
        if found:
            return found[0].parent
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)


@pytest.mark.docker
def test_a_role_that_fails_to_start_is_one_line_and_leaves_nothing(three_hosts: ThreeHosts, tmp_path: Path):
    """Targets told to listen on an address their host lacks (the load generator's) exit at once:
    one line with the server's own words, no run started, the database removed again."""
    argv = hosts_argv(three_hosts, tmp_path, "--scenario", "smoke", "--targets", CORE[0])
    argv += ["--bind", f"targets={three_hosts.hosts['loadgen'].address}"]
    proc = subprocess.run(argv, env=_clean_env(three_hosts), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("benchlab:")]
    assert "targets host tcp://" in line and f"-{CORE[0]} exited with" in line, line
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())
    for role in ("db", "targets"):
        assert three_hosts.hosts[role].docker("ps", "-aq").stdout.split() == [], role


@pytest.mark.docker
def test_sigterm_removes_everything_and_resume_finishes_across_hosts(three_hosts: ThreeHosts, tmp_path: Path):
    """With the load generator remote: SIGTERM here after the first step ends the run there too,
    interrupted, its rows here, every container gone from the three hosts; then --resume hands the
    run directory to a new load generator there, which measures only the steps left."""
    selection = ("--scenario", "smoke", "--targets", CORE[0], "--tests", "json,db", "--no-report")
    proc = subprocess.Popen(
        remote_argv(three_hosts, tmp_path, *selection), env=_clean_env(three_hosts), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    run_dir = _wait_for_rows(tmp_path, proc, 1)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted", meta["status"]
    done = len(read_csv(run_dir))
    assert done >= 1  # the rows measured before the signal came back
    for role in ("db", "targets", "loadgen"):
        assert three_hosts.hosts[role].docker("ps", "-aq").stdout.split() == [], role
        assert meta["hosts"]["cleanup"][role]["removed"], meta["hosts"]["cleanup"]
    argv = remote_argv(three_hosts, tmp_path, "--resume", str(run_dir), "--no-report")
    resumed = subprocess.run(argv, env=_clean_env(three_hosts), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    meta = json.loads((run_dir / "run.json").read_text())
    rows = read_csv(run_dir)
    assert meta["status"] == "complete" and len(rows) > done and len({r["step_id"] for r in rows}) == len(rows)
    assert_healthy_rows(rows, CORE[:1], ("json", "db"))
    assert meta["hosts_earlier"][0]["token"] != meta["hosts"]["token"]
    for role in ("db", "targets", "loadgen"):
        assert three_hosts.hosts[role].docker("ps", "-aq").stdout.split() == [], role


@pytest.mark.docker
def test_a_targets_host_dying_mid_run_is_honest_and_leaves_nothing(three_hosts: ThreeHosts, tmp_path: Path):
    """Its engine and everything on it killed after the first step: the run ends partial, the CSV
    keeps every row, the database host is cleaned up; then the namespaces go, leaving nothing."""
    tg = three_hosts.hosts["targets"]
    argv = hosts_argv(three_hosts, tmp_path, "--scenario", "smoke", "--targets", CORE[0], "--tests", "json,db")
    env = _clean_env(three_hosts)
    proc = subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_rows(tmp_path, proc, 1)
    three_hosts.kill_host(tg)
    _out, err = proc.communicate(timeout=300)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "run.json").read_text())
    rows = read_csv(run_dir)  # a valid CSV: every step has its row
    assert proc.returncode == 1, err[-3000:]
    assert meta["status"] == "partial", meta["status"]
    assert len(rows) == sum(meta["steps"].values())
    assert any(r["verification"] == "pass" for r in rows), rows
    assert any(r["verification"].startswith("error") for r in rows), [r["verification"] for r in rows]
    assert "targets" in meta["hosts"]["lost"], meta["hosts"]
    lost_lines = [line for line in err.splitlines() if "targets host" in line and "stopped answering" in line]
    assert len(lost_lines) == 1, err[-3000:]
    assert meta["hosts"]["cleanup"]["db"]["removed"] and "error" in meta["hosts"]["cleanup"]["targets"]
    assert three_hosts.hosts["db"].docker("ps", "-aq").stdout.split() == []
    assert "Traceback" not in err
    three_hosts.remove()
    assert three_hosts.leftovers() == []
