"""One virtual environment per service, built from its pinned ``requirements.txt``.

Native runs start each target with exactly the versions its image would have, without
touching the user's environment. Environments are cached by a hash of the requirements, so
only the first run (or a change of pins) pays for the install.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.interpreters import interpreter_version


def cache_dir() -> Path:
    return settings().venvs


def service_python(service_dir: Path, log: Callable[[str], None] = print, base: str | None = None) -> str:
    """The interpreter to run a service with, in a venv made from ``base`` (default: the lab's
    own Python), cached per interpreter; ``BENCHLAB_SERVICE_PYTHON`` overrides it unless a
    Python was asked for."""
    override = settings().service_python
    if override and base is None:
        return sys.executable if override == "current" else override
    base = base or sys.executable
    reqs = service_dir / "requirements.txt"
    version = sys.version if base == sys.executable else interpreter_version(base)
    digest = hashlib.sha256(reqs.read_bytes() + version.encode()).hexdigest()[:12]
    target = cache_dir() / f"{service_dir.name}-{digest}"
    python = target / "bin" / "python"
    if python.exists():
        return str(python)
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"installing {reqs} into {target} (first run only)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{service_dir.name}-", dir=target.parent))
    try:
        subprocess.run([base, "-m", "venv", str(tmp)], check=True, capture_output=True)
        subprocess.run(
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(reqs)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise BenchlabError(f"could not install {reqs}: {detail[0]}") from exc
    # Built aside and renamed into place, so a half-built environment is never used. Only the
    # console scripts' shebangs keep the old path; services are started as `python -m ...`.
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: use its environment
        shutil.rmtree(tmp, ignore_errors=True)
    return str(python)
