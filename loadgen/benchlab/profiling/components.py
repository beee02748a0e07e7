"""The components CPU is split into, and which one a sampled stack belongs to.

``COMPONENTS`` is the one table (the README shows it). A sample goes to the component of its
innermost frame that is *claimable*: a module outside the standard library, or one of the few
standard-library modules the table names (``json``, ``asyncio``, ``selectors``), so that time in
``json.dumps`` called from a view counts as ``json`` rather than as the view. A sample with no such
frame goes by its innermost frame (``gc``, ``threading``, ``socket``: ``Python runtime``). The
service's own files (its folder, the target kit) are ``app``; any other installed package ``other``.
Whatever runs under the target kit (its ``/benchlab/info`` reading the process tree with psutil) is
``app`` too: it is the lab's instrumentation inside the service, not a library the app chose.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

APP = "app"
RUNTIME = "Python runtime"
OTHER = "other"

# component -> top-level modules. Order is the order of bars and tables.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "server": ("gunicorn", "uvicorn", "hypercorn", "granian", "h11", "httptools", "h2", "wsproto"),
    "event loop": ("asyncio", "uvloop", "gevent", "greenlet", "anyio", "selectors"),
    "framework": ("flask", "werkzeug", "fastapi", "starlette"),
    "validation": ("pydantic", "pydantic_core"),
    "json": ("json", "orjson", "ujson"),
    "database driver": ("asyncpg", "psycopg", "psycopg_pool", "psycopg2"),
    "ORM": ("sqlalchemy", "flask_sqlalchemy"),
    "templates": ("jinja2", "markupsafe"),
    "telemetry": ("opentelemetry",),
    "HTTP client": ("httpx", "httpcore", "requests", "urllib3", "aiohttp"),
    APP: (),  # the service's own modules: see module_of
    RUNTIME: (),  # gc, threading and the rest of the standard library
    OTHER: (),  # anything else
}
COMPONENT_NAMES: tuple[str, ...] = tuple(COMPONENTS)
_BY_MODULE = {m: c for c, mods in COMPONENTS.items() for m in mods}
KIT_FILES = ("/target_kit.py", "/head_limit.py")  # the target kit, copied beside every service

# .../lib/python3.11/json/encoder.py (stdlib) vs .../lib/python3.11/site-packages/flask/app.py
_LIB = re.compile(r"/lib(?:64)?/(?:python|pypy)3\.\d+t?/(?P<rest>.+)$")
_INSTALLED = re.compile(r"/(?:site|dist)-packages/(?P<rest>.+)$")


@dataclass(frozen=True)
class Frame:
    """One frame as py-spy names it: function and the full file name (``--full-filenames``)."""

    name: str
    file: str
    line: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({short_file(self.file)})"


@dataclass(frozen=True)
class Module:
    name: str  # top-level module, "" for the service's own code
    stdlib: bool


def _top(rest: str) -> str:
    first = rest.split("/", 1)[0]
    return first.split(".", 1)[0]  # json/encoder.py -> json, selectors.py -> selectors, x.cpython-311.so -> x


@functools.cache
def module_of(file: str) -> Module | None:
    """The top-level module a frame's file belongs to; None for py-spy's own pseudo-frames (its
    ``process NNN`` roots carry no file)."""
    if not file:
        return None
    if file.startswith("<frozen "):  # <frozen importlib._bootstrap>
        return Module(file[len("<frozen ") : -1].split(".", 1)[0], stdlib=True)
    if m := _INSTALLED.search(file):
        return Module(_top(m["rest"]), stdlib=False)
    if m := _LIB.search(file):
        return Module(_top(m["rest"]), stdlib=True)
    return Module("", stdlib=False)  # the service's own folder, the kit, <string>: the app


def short_file(file: str) -> str:
    """``flask/app.py`` for an installed file, ``json/encoder.py`` for the stdlib, else the name."""
    for pattern in (_INSTALLED, _LIB):
        if m := pattern.search(file):
            return m["rest"]
    return file.rsplit("/", 1)[-1]


def component_of_module(module: Module) -> str:
    if module.name in _BY_MODULE:
        return _BY_MODULE[module.name]
    if module.stdlib:
        return RUNTIME
    return APP if module.name == "" else OTHER


def _claimable(module: Module) -> bool:
    return not module.stdlib or module.name in _BY_MODULE


def attribute(stack: Sequence[Frame]) -> str:
    """The component of one sample; ``stack`` runs from the root to the innermost frame."""
    if any(f.file.endswith(KIT_FILES) for f in stack):
        return APP
    modules = [m for f in stack if (m := module_of(f.file)) is not None]
    for module in reversed(modules):
        if _claimable(module):
            return component_of_module(module)
    return component_of_module(modules[-1]) if modules else RUNTIME
