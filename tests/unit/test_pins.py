"""Every installed version is a pinned one: the loadgen image's hash lock matches pyproject.toml,
and each service's requirements.txt names exactly what its real environment ends up with."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from benchlab.engines.k6 import K6_VERSION
from benchlab.venvs import service_python

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "loadgen" / "requirements.lock"
STALE = "loadgen/requirements.lock is out of date: run scripts/lock.sh"
# The lock is resolved for the image's interpreter and platform, whatever runs the tests.
LOCK_ENV = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "python_version": "3.11", "python_full_version": "3.11.0", "extra": ""}  # fmt: skip
SERVICES = sorted(p.parent for p in (ROOT / "services").glob("*/requirements.txt"))
# Lists each distribution in the interpreter it runs in: name, version, Requires-Dist.
LIST_DISTS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps([[d.metadata['Name'], d.version, d.requires or []] for d in m.distributions()]))"
)


def pyproject_inputs() -> list[str]:
    """What scripts/lock.sh locks, normalized as it does: build requires and runtime dependencies."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted(str(Requirement(r)) for r in data["build-system"]["requires"] + data["project"]["dependencies"])


def lock_entries() -> dict[str, tuple[Version, list[str]]]:
    """The lock's pins: canonical name -> (version, its --hash options)."""
    entries = {}
    for line in LOCK.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin, *options = line.split()
        name, version = pin.split("==")
        entries[canonicalize_name(name)] = (Version(version), options)
    return entries


def test_lock_header_matches_pyproject() -> None:
    text = "".join(line + "\n" for line in pyproject_inputs())
    recorded = re.search(r"^# pyproject-sha256: ([0-9a-f]{64})$", LOCK.read_text(), re.MULTILINE)
    assert recorded, f"no pyproject-sha256 header in the lock; {STALE}"
    assert recorded.group(1) == hashlib.sha256(text.encode()).hexdigest(), STALE


def test_lock_satisfies_every_dependency() -> None:
    lock = lock_entries()
    wrong = []
    for req in map(Requirement, pyproject_inputs()):
        if req.marker and not req.marker.evaluate(LOCK_ENV):
            continue
        version = lock.get(canonicalize_name(req.name), (None, []))[0]
        if version is None or not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req} (lock: {version or 'missing'})")
    assert not wrong, f"{', '.join(wrong)}: {STALE}"


def test_every_lock_entry_is_hashed() -> None:
    unhashed = [name for name, (_, options) in lock_entries().items()
                if not any(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options)]  # fmt: skip
    assert not unhashed, f"no --hash=sha256: for {', '.join(unhashed)}: {STALE}"


def test_lock_pins_the_checked_k6() -> None:
    """benchlab.engines.k6 checks the binary of K6_VERSION; the image must install that release."""
    assert lock_entries()["k6"][0] == Version(K6_VERSION), f"k6 in the lock is not {K6_VERSION}: {STALE}"


def installed(python: str) -> list[tuple[str, str, list[str]]]:
    out = subprocess.run([python, "-c", LIST_DISTS], capture_output=True, text=True, check=True, timeout=60)
    return [(canonicalize_name(name), version, requires) for name, version, requires in json.loads(out.stdout)]


@pytest.fixture(scope="module")
def venv_defaults(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """What `python -m venv` installs by itself (pip, and setuptools on 3.11): not the service's choice."""
    bare = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True, capture_output=True, timeout=300)
    return {name for name, _, _ in installed(str(bare / "bin" / "python"))}


def pinned(requirements: Path) -> dict[str, str]:
    """Canonical name -> ``name==version`` per requirement line; a pin that is not exact shows as written."""
    pins = {}
    for line in requirements.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            req = Requirement(spec)
            name, specs = canonicalize_name(req.name), list(req.specifier)
            exact = len(specs) == 1 and specs[0].operator == "=="
            pins[name] = f"{name}=={Version(specs[0].version)}" if exact else f"{name} {req.specifier or '(unpinned)'}"
    return pins


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_service_pins_everything_it_installs(
    service: Path, venv_defaults: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment benchlab builds for the service (as a native run does) holds exactly the pins."""
    monkeypatch.delenv("BENCHLAB_SERVICE_PYTHON", raising=False)
    dists = installed(service_python(service, log=lambda _: None))
    required = {
        canonicalize_name(req.name)
        for name, _, requires in dists if name not in venv_defaults
        for req in map(Requirement, requires) if not req.marker or req.marker.evaluate({"extra": ""})
    }  # fmt: skip
    by_name = pinned(service / "requirements.txt")
    pins = set(by_name.values())
    ignored = venv_defaults - required - set(by_name)
    have = {f"{name}=={Version(version)}" for name, version, _ in dists if name not in ignored}
    rel = service.relative_to(ROOT) / "requirements.txt"
    assert have == pins, (
        f"{rel}: installed but not pinned: {', '.join(sorted(have - pins)) or 'none'}; "
        f"pinned but not installed: {', '.join(sorted(pins - have)) or 'none'}"
    )
