"""The lab through docker compose: images built, the smoke scenario run, results checked.

The ``docker`` tests build every image (base images from a registry, or local stand-ins from
scripts/standins.sh), run ``SCENARIO=smoke ... up --exit-code-from loadgen`` on host networking
(every server on 127.0.0.1, on free ports, so a native lab can run alongside) and check the
CSV like the native run's test (and the log's step counts, host paths and quiet database
teardown); then the loadgen's privileges (never root, no capability, even with a root-owned
results folder), the README's console commands, and the cheap failure cases. They use
Compose v2 when the engine has it, else docker-compose 1.29. With CI set, unusable Docker fails them; otherwise
it skips them with the reason. The static tests keep compose.yaml, the overlays, the
Dockerfiles and .env.example in step with the target registry; they need no Docker.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import assert_healthy_rows, read_csv
from rich.console import Console

from benchlab import metadata
from benchlab.contract import TFB_TESTS as TESTS  # the built-in scenarios run TechEmpower's tests
from benchlab.ports import free_port
from benchlab.progress import Progress, format_eta, host_paths
from benchlab.targets import load_targets

ROOT = Path(__file__).resolve().parents[1]
compose_script = runpy.run_path(str(ROOT / "scripts" / "compose.py"), run_name="compose_script")
ROLES_CPUS = {"db": "BENCHLAB_CPUS_DB", "loadgen": "BENCHLAB_CPUS_LOADGEN", "upstream": "BENCHLAB_CPUS_UPSTREAM"}
PYTHON_DOCKERFILES = (
    "services/flask/Dockerfile", "services/fastapi/Dockerfile", "services/upstream/Dockerfile", "loadgen/Dockerfile",
)  # fmt: skip
# A uid:gid that is not ours, to show the loadgen writes as the results folder's owner.
RESULTS_OWNER = (4242, 4242)


def load_compose(name: str = "compose.yaml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def default_of(value: str) -> str:
    """``"${NAME:-dflt}"`` -> ``"dflt"``."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
    assert match, f"{value!r} is not ${{VAR:-default}}"
    return match.group(1)


def arg_default(dockerfile: str, arg: str) -> str:
    (value,) = re.findall(rf"^ARG {arg}=(\S+)$", (ROOT / dockerfile).read_text(), re.M)
    return value


# --- static: the files agree with each other and with the registry -------------------------


def test_compose_files_are_current_with_the_registry():
    """scripts/compose.py writes every target into the compose files and .env.example."""
    proc = subprocess.run(
        [sys.executable, "scripts/compose.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_a_changed_registry_makes_the_check_name_the_stale_files(tmp_path: Path):
    for name in ("compose.yaml", "compose.bridge.yaml", "compose.split.yaml", "compose.profile.yaml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "compose.yaml").read_text()
    (tmp_path / "compose.yaml").write_text(text.replace("${BENCHLAB_PORT_FASTAPI_GRANIAN:-8087}", "8087"))
    assert compose_script["stale_files"](tmp_path) == ["compose.yaml"]


def test_compose_targets_match_the_registry():
    services = load_compose()["services"]
    targets = load_targets(["all"], env={})
    assert set(services) == {"db", "upstream", "loadgen", *(t.name for t in targets)}
    loadgen_env = services["loadgen"]["environment"]
    for t in targets:
        svc = services[t.name]
        assert tuple(svc["command"]) == t.command, t.name
        assert default_of(svc["environment"]["BENCHLAB_PORT"]) == str(t.port), t.name
        assert svc["build"]["dockerfile"] == f"services/{t.service}/Dockerfile", t.name
        assert loadgen_env[f"BENCHLAB_PORT_{t.env_key}"] == svc["environment"]["BENCHLAB_PORT"]
        assert svc.get("profiles", []) == ([] if t.group == "core" else ["matrix", t.group]), t.name
    core = {t.name for t in targets if t.group == "core"}
    assert set(services["loadgen"]["depends_on"]) == {"db", "upstream", *core}
    assert all(d["condition"] == "service_healthy" for d in services["loadgen"]["depends_on"].values())


def test_every_target_has_its_service_folder():
    """What a new target needs besides its registry entry, named when it is missing."""
    missing = []
    for t in load_targets(["all"], env={}):
        folder = ROOT / "services" / t.service
        for needed in ("Dockerfile", "requirements.txt"):
            if not (folder / needed).is_file():
                missing.append(f"{t.name}: services/{t.service}/{needed}")
        modules = [w.split(":")[0] for w in t.command if re.fullmatch(r"\w+:\w+", w)]
        scripts = [w for w in t.command if w.endswith(".py")]
        for name in [f"{m}.py" for m in modules] + scripts:
            if not (folder / name).is_file():
                missing.append(f"{t.name}: services/{t.service}/{name} (from its command)")
    assert not missing, missing


def test_every_service_uses_host_networking_cpuset_and_nofile():
    for name, svc in load_compose()["services"].items():
        assert svc["network_mode"] == "host", name
        assert svc["ulimits"]["nofile"]["hard"] == "${BENCHLAB_NOFILE:-20000}", name
        if name in ROLES_CPUS:
            assert svc["cpuset"] == f"${{{ROLES_CPUS[name]}:-}}", name


def test_base_image_pins_agree():
    """The Dockerfiles' ARG defaults are the pins; compose and .env.example repeat them."""
    services = load_compose()["services"]
    python = {arg_default(f, "PYTHON_IMAGE") for f in PYTHON_DOCKERFILES}
    assert len(python) == 1, python
    (python_image,) = python
    postgres_image = arg_default("db/Dockerfile", "POSTGRES_IMAGE")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", python_image)
    assert re.fullmatch(r"postgres:15\.\d+-bookworm", postgres_image)
    assert default_of(services["db"]["build"]["args"]["POSTGRES_IMAGE"]) == postgres_image
    targets = {t.name for t in load_targets(["all"])}
    for name, svc in services.items():
        if name != "db":  # the targets' base is a variable of its own, with the same default
            variable = "TARGET_PYTHON_IMAGE" if name in targets else "PYTHON_IMAGE"
            assert svc["build"]["args"]["PYTHON_IMAGE"] == f"${{{variable}:-{python_image}}}", name
    example = (ROOT / ".env.example").read_text()
    assert f"#PYTHON_IMAGE={python_image}\n" in example
    assert f"#TARGET_PYTHON_IMAGE={python_image}\n" in example
    assert f"#POSTGRES_IMAGE={postgres_image}\n" in example


def test_env_example_documents_every_knob():
    text = (ROOT / "compose.yaml").read_text()
    for name in ("compose.bridge.yaml", "compose.split.yaml", "compose.profile.yaml"):
        text += (ROOT / name).read_text()
    knobs = set(re.findall(r"\$\{(\w+)", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?(\w+)=", example, re.M))
    assert knobs <= documented, sorted(knobs - documented)


def test_split_overlay_gives_every_service_one_role_and_base_core_none():
    base = load_compose()["services"]
    core = {"db", "loadgen", *(t.name for t in load_targets(env={}))}
    assert not any("profiles" in base[name] for name in core), "plain `up` must start the core lab"
    split = load_compose("compose.split.yaml")["services"]
    assert set(split) == set(base)
    roles = {name: svc["profiles"] for name, svc in split.items()}
    assert roles["db"] == roles["upstream"] == ["db"] and roles["loadgen"] == ["loadgen"]
    assert all(roles[t.name] == ["targets"] for t in load_targets(["all"], env={}))
    # targets wait for the database themselves, so a targets-only host needs no db service
    assert not any("depends_on" in base[t.name] for t in load_targets(["all"], env={}))


def test_bridge_overlay_publishes_on_loopback_and_leaves_host_mode():
    bridge = load_compose("compose.bridge.yaml")["services"]
    assert set(bridge) == {"db", "upstream", "loadgen", *(t.name for t in load_targets(env={}))}
    for name, svc in bridge.items():
        assert svc["network_mode"] == "bridge", name
        for port in svc.get("ports", []):
            assert port.startswith("${BENCHLAB_PUBLISH:-127.0.0.1}:"), port


def test_loadgen_never_runs_privileged():
    """The loadgen shares the host's PID namespace (for Postgres's CPU) and so must hold nothing
    that acts on other processes: no capability but the entrypoint's three (giving the results
    folder Docker made to the user, and dropping to that user), no way back up, and the
    namespace only alongside the sampling needing it."""
    loadgen = load_compose()["services"]["loadgen"]
    assert loadgen["cap_drop"] == ["ALL"]
    assert set(loadgen.get("cap_add", [])) <= {"CHOWN", "SETUID", "SETGID"}
    assert "no-new-privileges:true" in loadgen["security_opt"]
    assert "user" not in loadgen  # the entrypoint picks it (results or checkout owner, or 10001), never root
    assert loadgen["pid"] == "host" and loadgen["environment"]["BENCHLAB_SAMPLE_DB"] == "host"
    entrypoint = (ROOT / "loadgen/entrypoint.sh").read_text()
    assert "uid=10001" in entrypoint and entrypoint.count("exec setpriv") == 1


PTRACE = "SYS_PTRACE"
SIDECAR_UID = "10002"  # not the targets' 10001 (services/*/Dockerfile): it may read them, not signal them


def test_compose_alone_grants_ptrace_to_nothing():
    """Profiling must not weaken the default lab: no capability that reads other processes, no
    privileged role, no PID namespace shared but the loadgen's (for Postgres's CPU)."""
    for name, svc in load_compose()["services"].items():
        assert PTRACE not in svc.get("cap_add", []) and not svc.get("privileged"), name
        assert "pid" not in svc or name == "loadgen", name


def test_profile_overlay_grants_ptrace_only_to_one_sidecar_per_target():
    """compose.profile.yaml: each target gets a sidecar in its PID namespace alone, with its
    profiles, on the loadgen's CPUs, listening on loopback; SYS_PTRACE is kept by the sidecar
    alone (SETUID/SETGID only for setpriv's switch to a uid that is not the target's), and
    nothing in the overlay gives the loadgen or a target any capability."""
    base = load_compose()["services"]
    overlay = load_compose("compose.profile.yaml")["services"]
    targets = load_targets(["all"], env={})
    suffix = compose_script["PROFILER_SUFFIX"]
    assert set(overlay) == {"loadgen", *(t.name + suffix for t in targets)}
    for t in targets:
        svc = overlay[t.name + suffix]
        assert svc["pid"] == f"service:{t.name}", t.name
        assert svc["cap_drop"] == ["ALL"] and PTRACE in svc["cap_add"], t.name
        assert set(svc["cap_add"]) == {PTRACE, "SETUID", "SETGID"}, t.name
        assert "no-new-privileges:true" in svc["security_opt"] and not svc.get("privileged"), t.name
        entry = svc["entrypoint"]
        assert entry[0] == "setpriv" and f"--reuid={SIDECAR_UID}" in entry and f"--regid={SIDECAR_UID}" in entry
        assert "--ambient-caps=-all,+sys_ptrace" in entry and "--inh-caps=-all,+sys_ptrace" in entry
        assert svc["cpuset"] == base["loadgen"]["cpuset"] and svc["network_mode"] == "host", t.name
        assert svc["image"] == base["loadgen"]["image"], t.name  # the loadgen image has py-spy
        assert svc.get("profiles", []) == base[t.name].get("profiles", []), t.name
        port = svc["command"][svc["command"].index("--port") + 1]
        assert default_of(port) == str(t.port + 1000), t.name
        assert overlay["loadgen"]["environment"][f"BENCHLAB_PROFILE_PORT_{t.env_key}"] == port, t.name
        assert svc["environment"]["BENCHLAB_AGENT_URL"] == f"http://127.0.0.1:{port}", t.name
        assert t.name not in overlay, "the overlay leaves the targets as they are"
    loadgen = overlay["loadgen"]
    assert set(loadgen) == {"environment", "depends_on"}, "no capability, PID or security change for the loadgen"
    assert loadgen["environment"]["BENCHLAB_PROFILER"] == "sidecar"
    core = {t.name + suffix for t in targets if t.group == "core"}
    assert set(loadgen["depends_on"]) == core  # Compose v2 refuses a depends_on on an inactive profile
    agent = (ROOT / "loadgen/benchlab/profiling/agent.py").read_text()
    assert 'AGENT_HOST = "127.0.0.1"' in agent  # the agent listens on loopback only


def test_loadgen_is_told_where_results_and_the_checkout_are():
    loadgen = load_compose()["services"]["loadgen"]
    results, checkout = loadgen["volumes"]
    source, target = results.rsplit(":", 1)
    assert target == loadgen["environment"]["BENCHLAB_OUT"]
    assert loadgen["environment"]["BENCHLAB_RESULTS_HOST"] == source
    # the checkout read-only: its owner and its .git, nothing written
    assert checkout == f".:{loadgen['environment']['BENCHLAB_CHECKOUT']}:ro"


def test_host_paths_replace_the_container_results_path_only():
    env = {"BENCHLAB_OUT": "/results", "BENCHLAB_RESULTS_HOST": "./results/"}
    text = "run r1 -> /results/r1; report: /results/r1/report.html; /results2 x/results /results"
    assert host_paths(text, env) == (
        "run r1 -> ./results/r1; report: ./results/r1/report.html; /results2 x/results ./results"
    )
    assert host_paths(text, {"BENCHLAB_OUT": "/results"}) == text  # native runs: as they are


def test_log_lines_carry_step_count_and_eta():
    """Without a terminal (compose logs) each finished step prints ``[k/N] ... ETA mm:ss``, the
    pace counted on the steps this process ran (a resumed run's done steps count, untimed)."""
    now = [100.0]
    progress = Progress(6, console=Console(file=io.StringIO()), clock=lambda: now[0])
    assert not progress.interactive
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.print", lambda text, **_: lines.append(text))
        with progress:
            progress.advance(2)
            now[0] += 80  # verification: once per run, not part of the pace
            progress.live("flask json c32 primer")
            now[0] += 30
            progress.step_done("flask json c32: 1,000 req/s")
            progress.live("flask db c32")
            now[0] += 30
            progress.step_done("flask db c32: 900 req/s")
    assert lines == ["  [3/6] flask json c32: 1,000 req/s  ETA 01:30", "  [4/6] flask db c32: 900 req/s  ETA 01:00"]
    assert format_eta(59.6) == "01:00" and format_eta(3725) == "1:02:05"


def test_the_commit_comes_from_the_mounted_checkout_or_says_why_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """In compose the loadgen reads the commit from the checkout mounted at BENCHLAB_CHECKOUT
    (tests/test_checkout.py covers the .git layouts); a folder that is no checkout says so."""
    monkeypatch.delenv("BENCHLAB_GIT_COMMIT", raising=False)
    monkeypatch.setenv("BENCHLAB_CHECKOUT", str(tmp_path))
    assert metadata.git_commit() == f"unknown ({tmp_path} is not a git checkout (no .git))"
    monkeypatch.setenv("BENCHLAB_GIT_COMMIT", "abc123")  # an explicit value wins
    assert metadata.git_commit() == "abc123"


def test_targets_lists_every_target_and_marks_what_a_plain_run_measures():
    """A newcomer sees the whole matrix, and which three a plain `docker compose up` measures."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchlab.cli", "targets"], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip() and not line.startswith("*")}
    every = load_targets(["all"], env={})
    assert set(rows) == {t.name for t in every}
    marked = {name for name, line in rows.items() if line.split()[1] == "*"}
    assert marked == {t.name for t in load_targets(env={})}  # the default group: core
    assert "* measured by a plain run" in proc.stdout


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Quick start (Docker)", 1)[1].split("\n## ", 1)[0]


# The README's first command: a newcomer types it and nothing else (no mkdir, no export).
README_FIRST = "docker compose up --build --exit-code-from loadgen"
# What the README tells a newcomer to type for one-off commands, and to clean up after them
# (`run` starts the database and targets it depends on, and leaves them running).
README_CONSOLE = ("docker compose run --rm loadgen benchlab targets", "docker compose down")


def test_readme_first_screen_is_the_two_commands():
    """The first code block: run the lab, run the tests; nothing to prepare before either."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines()]
    assert commands == [README_FIRST, 'pip install -e ".[test]" && python -m pytest']
    assert readme.index("```sh") < 1000  # on the first screen
    for command in README_CONSOLE:
        assert command in quick_start(), command
    assert "export BENCHLAB_GIT_COMMIT" not in readme and "mkdir -p results" not in readme


# --- docker: the real stack -------------------------------------------------------------


@functools.cache
def installed_composes() -> dict[str, list[str]]:
    """Every Compose here: v2 (``docker compose``, what users run) first, then Debian's 1.29.
    Probed once per session: each layout test and the stack fixture ask."""
    found = {}
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            found["v2"] = ["docker", "compose"]
    if shutil.which("docker-compose"):
        found["v1"] = ["docker-compose"]
    return found


def compose_command() -> list[str] | None:
    return next(iter(installed_composes().values()), None)


def clean_env() -> dict[str, str]:
    """The environment without BENCHLAB_/COMPOSE_ settings a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("BENCHLAB_", "COMPOSE_"))}


# The README's commands, one per way of running the lab (its "Running across machines" and
# "Bridge networking" sections), as the files and profiles they give Compose.
README_LAYOUTS = {
    "one host": ("-f", "compose.yaml"),
    "database host": ("-f", "compose.yaml", "-f", "compose.split.yaml", "--profile", "db"),
    "targets host": ("-f", "compose.yaml", "-f", "compose.split.yaml", "--profile", "targets"),
    "loadgen host": ("-f", "compose.yaml"),
    "bridge": ("-f", "compose.yaml", "-f", "compose.bridge.yaml"),
    "profiling": ("-f", "compose.yaml", "-f", "compose.profile.yaml"),
    "profiling the matrix": ("-f", "compose.yaml", "-f", "compose.profile.yaml", "--profile", "matrix"),
}


@pytest.mark.parametrize("layout", README_LAYOUTS)
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_every_layout_is_valid_under_both_compose_versions(version: str, layout: str, tmp_path: Path):
    """Users run Compose v2; the files stay within what 1.29 accepts too. ``config`` needs no engine."""
    command = installed_composes().get(version)
    if command is None:
        reason = f"Compose {version} is not installed (run .ci/docker.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    argv = [*command, "--env-file", str(empty), *README_LAYOUTS[layout], "config", "-q"]
    proc = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"


def docker_unusable() -> str | None:
    """Why Docker cannot be used here, or None when it can."""
    if not shutil.which("docker"):
        return "no docker CLI (run .ci/docker.sh)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"docker engine not usable (run .ci/docker.sh): {lines[-1] if lines else 'no answer'}"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed (run .ci/docker.sh)"
    return None


@dataclass
class Stack:
    """One compose project of the lab, on its own ports and results folder."""

    command: list[str]
    env: dict[str, str]
    results: Path
    env_file: Path  # empty: a developer's .env must not change what the test runs

    def __call__(
        self, *args: str, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "--env-file", str(self.env_file), "-f", "compose.yaml", *args]
        return subprocess.run(
            argv, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
        )


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every image built and a project configured; everything removed afterwards (down -v)."""
    reason = docker_unusable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    command = compose_command()
    assert command is not None
    results = tmp_path_factory.mktemp("compose-results")
    if os.geteuid() == 0:
        os.chown(results, *RESULTS_OWNER)
    ports = {f"BENCHLAB_PORT_{t.env_key}": str(free_port()) for t in load_targets(["all"], env={})}
    inherited = clean_env()
    inherited.pop("SCENARIO", None)
    if os.environ.get("BENCHLAB_IMAGE_TAG"):  # a helper's own tag, so the default images stay as they are
        inherited["BENCHLAB_IMAGE_TAG"] = os.environ["BENCHLAB_IMAGE_TAG"]
    env = {
        **inherited,
        **ports,
        "COMPOSE_PROJECT_NAME": f"benchlabtest{os.getpid()}",
        "BENCHLAB_DB_PORT": str(free_port()),
        "BENCHLAB_RESULTS": str(results),
        "SCENARIO": "smoke",
    }
    env_file = tmp_path_factory.mktemp("compose-env") / "empty.env"
    env_file.write_text("")
    lab = Stack(command, env, results, env_file)
    try:
        standins = subprocess.run(
            ["bash", "scripts/standins.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800
        )
        assert standins.returncode == 0, standins.stderr[-3000:]
        build = lab("build", timeout=1800)
        assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
        yield lab
    finally:
        # Every profile's services, or those the split test started would stay up.
        lab("--profile", "matrix", "down", "-v", "--remove-orphans", "-t", "10", timeout=300)


def scenario_results(tmp_path: Path, name: str, text: str) -> tuple[Path, dict[str, str]]:
    """A results folder holding scenario ``name`` (owned as a user's would be), and the
    environment that points the loadgen at both."""
    results = tmp_path / "results"
    results.mkdir()
    (results / name).write_text(text)
    if os.geteuid() == 0:
        for path in (results, results / name):
            os.chown(path, *RESULTS_OWNER)
    return results, {"BENCHLAB_RESULTS": str(results), "SCENARIO": f"/results/{name}"}


def _owned_files(root: Path) -> set[tuple[int, int]]:
    return {(p.stat().st_uid, p.stat().st_gid) for p in [root, *root.rglob("*")]}


@pytest.mark.docker
def test_compose_files_validate(stack: Stack):
    for overlay in ((), ("-f", "compose.bridge.yaml"), ("-f", "compose.split.yaml")):
        proc = stack(*overlay, "config", "-q", timeout=60)
        assert proc.returncode == 0, proc.stderr


def fresh_checkout(where: Path) -> tuple[Path, str]:
    """This tree's files (committed or not, ignored ones left out) as a new git repository of
    one commit, the way a newcomer's clone looks: no results folder, nothing exported."""
    checkout = where / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    git = ["git", "-c", "user.name=benchlab", "-c", "user.email=benchlab@localhost"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fresh"]):
        subprocess.run([*git, *argv], cwd=checkout, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True)
    return checkout, head.stdout.strip()


def as_docker_user(home: Path) -> tuple[list[str], dict[str, str], tuple[int, int]]:
    """How to run a command as a plain user of the docker group: ourselves when not root,
    else uid RESULTS_OWNER with only the engine socket's group (no passwd entry needed)."""
    if os.geteuid() != 0:
        return [], {}, (os.geteuid(), os.getegid())
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    uid, gid = RESULTS_OWNER
    home.mkdir(exist_ok=True)
    os.chown(home, uid, gid)
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={socket_gid}", "--"]
    return prefix, {"HOME": str(home)}, (uid, gid)


@pytest.mark.docker
def test_readme_first_command_in_a_fresh_checkout_as_a_docker_user(stack: Stack, request: pytest.FixtureRequest):
    """A newcomer's clone, a user of the docker group (not root), the README's first command and
    nothing else (the smoke scenario and free ports aside): a complete run in ./results/<run_id>/,
    every file theirs, the checkout's commit in run.json."""
    # a folder of its own in /tmp (pytest's is root's alone, closed to the user)
    base = Path(tempfile.mkdtemp(prefix="benchlab-newcomer-"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    checkout, commit = fresh_checkout(base)
    prefix, user_env, owner = as_docker_user(base / "home")
    if os.geteuid() == 0:
        for path in [base, *base.rglob("*")]:
            os.lchown(path, *owner)
    env = {k: v for k, v in stack.env.items() if k not in ("BENCHLAB_RESULTS",)}
    argv = [*prefix, *stack.command, *README_FIRST.split()[len(["docker", "compose"]):]]
    proc = subprocess.run(
        argv, cwd=checkout, env={**env, **user_env}, capture_output=True, text=True, timeout=1500
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(line for line in output.splitlines() if not line.startswith("#"))[-6000:]
    assert "CPUs:" in output  # the loadgen prints what each role was given
    (run_dir,) = [p for p in (checkout / "results").iterdir() if p.is_dir()]
    rows = read_csv(run_dir)
    assert_healthy_rows(rows, [t.name for t in load_targets(env={})], TESTS)
    # the loadgen shares the host's PID namespace: it saw Postgres work during db steps
    assert all(r["db_cpu_cores"] != "" for r in rows if r["test"] in ("db", "updates"))
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and meta["mode"] == "compose"
    assert meta["scenario_name"] == "smoke"
    assert meta["git_commit"] == commit
    for name, info in meta["targets"].items():
        assert info["workers"] >= 1 and info["packages"], name
    # every file belongs to the user who ran the command, the results folder Docker made included
    assert _owned_files(checkout / "results") == {owner}
    # the log gives each step's count and an ETA, and the paths where they are on the host
    logged = [line for line in output.splitlines() if "loadgen" in line]
    assert any(re.search(r"\[\d+/\d+\] .* ETA \d\d:\d\d$", line) for line in logged), logged[-20:]
    assert any(f"results: ./results/{run_dir.name}/results.csv" in line for line in logged), logged[-5:]
    assert not any(" /results/" in line for line in logged), [x for x in logged if " /results/" in x]
    # teardown: Postgres waits for the targets' pools to hang up instead of terminating them
    db_log = stack("logs", "--no-color", "db", timeout=120)
    assert "terminating connection due to administrator command" not in db_log.stdout, db_log.stdout[-3000:]
    print(f"loadgen ran {loadgen_seconds(stack):.0f} s (smoke, README: Quick start)")


@pytest.mark.docker
def test_the_mounted_checkout_gives_the_commit_or_says_why_not(stack: Stack):
    """This tree's own checkout as compose mounts it: its commit, or (a git worktree, whose
    repository lies outside the mount) "unknown" with why."""
    probe = "from benchlab.metadata import git_commit; print(git_commit())"
    proc = stack("run", "--rm", "--no-deps", "-T", "loadgen", "python", "-c", probe, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = proc.stdout.strip().splitlines()[-1]
    if (ROOT / ".git").is_dir():
        assert recorded == _git_commit()
    else:
        assert recorded.startswith("unknown (/checkout/.git links to ") and "outside" in recorded, recorded


JSON_ONLY = """name: json-only
duration_s: 1
pause_s: 0
primer: {duration_s: 1, connections: 4}
warmup: false
tests:
  json: {concurrency: [8]}
"""


@pytest.mark.docker
def test_the_matrix_profile_measures_all_twelve(stack: Stack, tmp_path: Path):
    """`--profile matrix up`: compose starts every group beside the core targets, and the loadgen
    (which can only depend on the core ones) finds, verifies and measures all of them."""
    results, env = scenario_results(tmp_path, "json-only.yaml", JSON_ONLY)
    try:
        proc = stack("--profile", "matrix", "up", "--exit-code-from", "loadgen", env=env, timeout=900)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, "\n".join(line for line in output.splitlines() if "loadgen" in line)[-4000:]
        assert "measuring the baselines, servers, style group(s) too" in output
        (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
        expected = [t.name for t in load_targets(["all"], env={})]
        assert len(expected) == 12
        assert_healthy_rows(read_csv(run_dir), expected, ("json",))
        print(f"loadgen ran {loadgen_seconds(stack):.0f} s (json only, all twelve targets)")
    finally:
        stack("--profile", "matrix", "down", "-t", "10", env=env, timeout=300)


def loadgen_seconds(stack: Stack) -> float:
    """How long the last loadgen container ran, from the engine's own start and finish times."""
    ids = stack("ps", "-a", "-q", "loadgen", timeout=60).stdout.split()
    state = json.loads(subprocess.run(["docker", "inspect", ids[-1]], capture_output=True, text=True).stdout)
    started, finished = (datetime.fromisoformat(state[0]["State"][k][:26]) for k in ("StartedAt", "FinishedAt"))
    return (finished - started).total_seconds()


@pytest.mark.docker
def test_loadgen_is_unprivileged_even_with_a_root_owned_results_folder(stack: Stack, tmp_path: Path):
    """Docker creates a missing results folder as root; the entrypoint gives that empty folder to
    the checkout's owner (10001 when root owns the checkout) and runs as them, with no capability,
    unable to signal the host's PID 1. A root-owned folder that already holds files is left alone,
    and `benchlab run` refuses in one line that says how to fix it."""
    made_by_docker = tmp_path / "results-made-by-docker"
    env = {"BENCHLAB_RESULTS": str(made_by_docker)}
    probe = "id -u; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; kill -0 1 && echo SIGNALLED"
    proc = stack("run", "--rm", "--no-deps", "-T", "loadgen", "sh", "-c", probe, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    checkout_owner = ROOT.stat().st_uid or 10001
    assert proc.stdout.split()[0] == str(checkout_owner), output
    assert made_by_docker.stat().st_uid == checkout_owner, "the folder Docker made is the user's"
    assert re.search(r"CapEff:\s+0+\n", output) and re.search(r"NoNewPrivs:\s+1", output), output
    assert "SIGNALLED" not in output and "not permitted" in output, output  # EPERM
    if os.geteuid() == 0:  # only root can make a root-owned folder that holds a file
        kept = tmp_path / "roots-results"
        kept.mkdir()
        (kept / "old.txt").write_text("root's\n")
        refused = stack("run", "--rm", "--no-deps", "-T", "loadgen", env={"BENCHLAB_RESULTS": str(kept)}, timeout=300)
        lines = (refused.stdout + refused.stderr).strip().splitlines()
        assert refused.returncode == 2, lines
        assert [line for line in lines if "chown" in line] == lines[-1:], lines
        assert str(kept) in lines[-1] and "BENCHLAB_RESULTS" in lines[-1], lines
        assert kept.stat().st_uid == 0, "a folder holding files is not taken over"
    # with the folder given to a user, it runs as that user, still unable to signal PID 1
    ours = stack("run", "--rm", "--no-deps", "-T", "loadgen", "sh", "-c", probe, timeout=300)
    owner = RESULTS_OWNER[0] if os.geteuid() == 0 else os.geteuid()
    assert ours.stdout.split()[0] == str(owner) and "SIGNALLED" not in ours.stdout, ours.stdout + ours.stderr


@pytest.mark.docker
def test_readme_console_commands_leave_nothing_running(stack: Stack):
    """`run` starts the loadgen's dependencies and leaves them up (Compose's behaviour); the
    README says so and ends with `down`, which stops them."""
    stack("down", "-t", "10", timeout=300)

    def running() -> set[str]:
        proc = stack("ps", "--services", "--filter", "status=running", timeout=60)
        assert proc.returncode == 0, proc.stderr
        return set(proc.stdout.split())

    first, last = (command.split()[2:] for command in README_CONSOLE)  # without `docker compose`
    proc = stack(*first[:2], "-T", *first[2:], timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert running() == {"db", "upstream", *(t.name for t in load_targets(env={}))}  # the core lab: no profile
    down = stack(*last, "-t", "10", timeout=300)
    assert down.returncode == 0, down.stderr
    assert running() == set()


@pytest.mark.docker
def test_calibrate_runs_in_the_loadgen_image(stack: Stack):
    """`benchlab calibrate` needs the baseline server (uvloop) inside the loadgen image."""
    proc = stack("run", "--rm", "--no-deps", "loadgen", "benchlab", "calibrate", "--duration", "2", timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "engine ceiling: wrk" in output and "Traceback" not in output, output[-3000:]


@pytest.mark.docker
def test_bad_scenario_exits_nonzero_with_one_line(stack: Stack):
    proc = stack("run", "--rm", "--no-deps", "loadgen", env={"SCENARIO": "no-such-scenario"}, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if "no-such-scenario" in line]) == 1, output


@pytest.mark.docker
@pytest.mark.parametrize("target", [t.name for t in load_targets(env={})])
def test_taken_port_is_one_clear_line_and_nonzero_exit(stack: Stack, target: str):
    """A target whose port is taken stops with a line naming the port, and compose says so."""
    up = stack("up", "-d", "db", timeout=300)
    assert up.returncode == 0, up.stderr
    (key,) = [t.env_key for t in load_targets(env={}) if t.name == target]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = str(squatter.getsockname()[1])
        proc = stack("run", "--rm", "--no-deps", target, env={f"BENCHLAB_PORT_{key}": port}, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output[-3000:]
    assert any(port in line and "in use" in line.lower() for line in output.splitlines()), output[-3000:]


@pytest.mark.docker
def test_split_profiles_start_one_role_each(stack: Stack):
    """compose.split.yaml: `--profile db` starts only the database and the upstream beside it,
    `--profile targets` only the targets, and the loadgen host runs compose.yaml alone with
    --no-deps (with the overlay, Compose v2 rejects the loadgen: its depends_on would name
    services of inactive profiles)."""
    split = ("-f", "compose.split.yaml")
    targets = {t.name for t in load_targets(["all"], env={})}  # the overlay gives every target the role
    stack("down", "-v", "-t", "5", timeout=300)

    def running() -> set[str]:
        """Asked of the engine: Compose's own `ps` leaves out services of profiles not named."""
        project = f"label=com.docker.compose.project={stack.env['COMPOSE_PROJECT_NAME']}"
        argv = ["docker", "ps", "--filter", project, "--format", '{{.Label "com.docker.compose.service"}}']
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return set(proc.stdout.split())

    db_host = {"db", "upstream"}
    for profile, expected in (("db", db_host), ("targets", {*db_host, *targets})):
        up = stack(*split, "--profile", profile, "up", "-d", timeout=300)
        assert up.returncode == 0, up.stderr
        assert running() == expected, profile
    alone = stack("run", "--rm", "--no-deps", "loadgen", "benchlab", "targets", "--targets", "all", timeout=300)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert all(name in alone.stdout for name in targets), alone.stdout


TARGETS_313 = "python:3.13-slim-trixie"  # scripts/standins.sh builds it from Debian's trixie


@pytest.mark.docker
def test_the_core_targets_build_and_pass_verification_on_python_313(stack: Stack, tmp_path: Path):
    """TARGET_PYTHON_IMAGE builds the targets, and only them, on another Python: on 3.13 each
    core target passes verification and its rows record the version it ran. Tagged apart
    (BENCHLAB_IMAGE_TAG), beside the default images, and removed afterwards."""
    results, scenario = scenario_results(tmp_path, "json-db.yaml", JSON_ONLY + "  db: {concurrency: [8]}\n")
    env = {**scenario, "TARGET_PYTHON_IMAGE": TARGETS_313, "BENCHLAB_IMAGE_TAG": "py313"}
    stack("--profile", "matrix", "down", "-t", "5", timeout=300)  # only the core targets are to be found up
    try:
        standins = subprocess.run(["bash", "scripts/standins.sh"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=1800, env={**os.environ, **env})  # fmt: skip
        assert standins.returncode == 0, standins.stderr[-3000:]
        proc = stack("up", "--build", "--exit-code-from", "loadgen", env=env, timeout=1200)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, "\n".join(line for line in output.splitlines() if "loadgen" in line)[-4000:]
        (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
        rows = read_csv(run_dir)
        assert_healthy_rows(rows, [t.name for t in load_targets(env={})], ("json", "db"))
        assert {r["python"].rsplit(".", 1)[0] for r in rows} == {"3.13"}, {r["python"] for r in rows}
        loadgen_python = json.loads((run_dir / "run.json").read_text())["python"]
        assert loadgen_python.startswith("3.11."), loadgen_python  # the lab itself stays on the pin
    finally:
        stack("down", "-t", "10", "--rmi", "all", env=env, timeout=300)


PROFILED = """name: profiled-json
duration_s: 2
pause_s: 0
primer: {duration_s: 1, connections: 4}
warmup: false
targets: [fastapi-uvicorn, flask-gunicorn-gevent]
tests:
  json: {concurrency: [8]}
"""


@pytest.mark.docker
def test_profile_overlay_profiles_each_target_from_its_sidecar(stack: Stack, tmp_path: Path):
    """PROFILE=1 with compose.profile.yaml: each target's sidecar records it, and the run gets the
    profiled rows, profile.csv, a speedscope file and a flame graph per target x test; the
    sidecars ran as uid 10002 with CAP_SYS_PTRACE alone, the loadgen with no ptrace at all."""
    results, scenario = scenario_results(tmp_path, "profiled.yaml", PROFILED)
    profiled = ("fastapi-uvicorn", "flask-gunicorn-gevent")
    ports = {f"BENCHLAB_PROFILE_PORT_{t.env_key}": str(free_port()) for t in load_targets(["all"], env={})}
    env = {**scenario, "PROFILE": "1", **ports}
    overlay = ("-f", "compose.profile.yaml")
    try:
        proc = stack(*overlay, "up", "--exit-code-from", "loadgen", env=env, timeout=900)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, "\n".join(line for line in output.splitlines() if "loadgen" in line)[-4000:]
        (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
        rows = read_csv(run_dir)
        rows_profiled = [r for r in rows if r["mode"] == "profiled"]
        assert sorted(r["target"] for r in rows_profiled) == sorted(profiled)
        assert all(r["verification"] == "pass" and int(r["requests"]) > 0 for r in rows_profiled), rows_profiled
        with (run_dir / "profile.csv").open(newline="") as fh:
            shares = list(csv.DictReader(fh))
        for target in profiled:
            mine = [r for r in shares if r["target"] == target and r["test"] == "json" and r["component"] != "(idle)"]
            assert mine and sum(float(r["share"]) for r in mine) == pytest.approx(1, abs=0.01), target
            assert sum(float(r["cpu_us_per_request"]) for r in mine) > 0, target
            assert {"server", "framework"} <= {r["component"] for r in mine if float(r["share"]) > 0}, mine
            speedscope = run_dir / "profiles" / target / "json.speedscope.json"
            assert json.loads(speedscope.read_text())["$schema"].startswith("https://www.speedscope.app/")
            svg = (run_dir / "profiles" / target / "json.svg").read_text()
            assert svg.lstrip().startswith("<svg") or "<svg" in svg[:500], target
        meta = json.loads((run_dir / "run.json").read_text())["profile"]
        assert meta["version"] == "0.4.3"
        for target in profiled:  # CapEff: bit 19, CAP_SYS_PTRACE, alone
            assert meta["sidecars"][target] == {"uid": 10002, "capabilities": f"{1 << 19:016x}"}, meta
        loadgen_id = stack(*overlay, "ps", "-a", "-q", "loadgen", env=env, timeout=60).stdout.split()[-1]
        inspect = subprocess.run(["docker", "inspect", loadgen_id], capture_output=True, text=True, check=True)
        host_config = json.loads(inspect.stdout)[0]["HostConfig"]
        assert PTRACE not in (host_config["CapAdd"] or []) and host_config["CapDrop"] == ["ALL"], host_config["CapAdd"]
        assert host_config["PidMode"] == "host" and not host_config["Privileged"]
    finally:
        stack(*overlay, "down", "-t", "10", env=env, timeout=300)
