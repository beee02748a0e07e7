"""The Python interpreters a native run can put the targets on (the ``python`` axis).

``3.13`` is ``BENCHLAB_PYTHON_3_13`` when set, else ``python3.13`` on PATH; ``3.14t`` (the
free-threaded build) is ``BENCHLAB_PYTHON_3_14T`` or ``python3.14t``. Each is asked what it is
(exact version, free-threaded or not) before anything starts, so a missing or wrong one is one
line and exit 2, never a lab half started. The service venvs are cached per interpreter
(``venvs.service_python``).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchlab.config.settings import python_key, settings
from benchlab.errors import BenchlabError

# What an interpreter says of itself: exact version, its sys.version (the venv cache key), and
# whether it was built free-threaded (Py_GIL_DISABLED).
_PROBE = (
    "import platform, sys, sysconfig; "
    "print(platform.python_version()); print(sys.version.replace(chr(10), ' ')); "
    "print('free-threading' if sysconfig.get_config_var('Py_GIL_DISABLED') else 'default')"
)


@dataclass(frozen=True)
class Interpreter:
    asked: str  # "3.13", "3.14t"
    path: str
    version: str  # "3.13.1"
    build: str  # "default" or "free-threading"


def find_interpreter(version: str) -> Interpreter:
    """The interpreter for ``version``, checked: it runs, is that version and that build."""
    return _find(version, settings().python(version))


@functools.cache
def _find(version: str, given: str) -> Interpreter:
    path = given or shutil.which(f"python{version}")
    how = (
        f"install Python {version} (e.g. `uv python install {version}`, `pyenv install {version}` or your "
        f"distribution's python{version} package) and put python{version} on PATH, or set "
        f"{python_key(version)}=/path/to/python{version}"
    )
    if not path:
        raise BenchlabError(f"Python {version} is not installed here (no python{version} on PATH): {how}")
    try:
        out = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchlabError(f"Python {version} at {path} does not run ({exc}): {how}") from None
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) < 3:
        raise BenchlabError(f"Python {version} at {path} does not run: {how}")
    exact, _, build = lines[:3]
    free = version.endswith("t")
    if not exact.startswith(version.rstrip("t") + ".") or (build == "free-threading") != free:
        raise BenchlabError(f"{path} is Python {exact} ({build} build), not {version}: {how}")
    return Interpreter(version, str(Path(path)), exact, build)


@functools.cache
def interpreter_version(path: str) -> str:
    """``sys.version`` of the interpreter at ``path``: what its venvs are cached under."""
    out = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    return lines[1] if out.returncode == 0 and len(lines) > 1 else path
