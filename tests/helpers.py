"""Helpers the tests share: the real CLI, reading a run, real misbehaving HTTP servers, where
PostgreSQL is. Fixtures live in conftest.py; test modules import these, never each other."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchlab.harness import repo_root, target_kit_dir
from benchlab.measurement import LATENCY_KEYS
from benchlab.model.codec import COLUMNS
from benchlab.ports import free_port
from benchlab.postgres import DISTRIBUTIONS, distribution_bindirs
from benchlab.targets import Target, load_targets
from benchlab.venvs import service_python

# The targets tests hold to the contract: all of them. BENCHLAB_TEST_TARGETS (names or groups,
# comma-separated) narrows it while working on some, e.g.
#   BENCHLAB_TEST_TARGETS=flask-granian python -m pytest tests/test_contract.py
TEST_TARGETS = os.environ.get("BENCHLAB_TEST_TARGETS", "all").split(",")


def own_targets() -> list[Target]:
    """The tested targets on free ports, for a lab of a test's own that may be frozen or killed."""
    ports = {f"BENCHLAB_PORT_{t.env_key}": str(free_port()) for t in load_targets(["all"])}
    return load_targets(TEST_TARGETS, env=ports)

PERCENTILES = tuple(k for k in LATENCY_KEYS if k not in ("mean", "stdev"))  # and max: what is ordered


def start_launcher(target: Target, kit_parent: Path, **env: str) -> subprocess.Popen[str]:
    """The target's registry command in its service venv, as the harness runs it, with ``env``
    over the harness's environment (DATABASE_URL, BENCHLAB_PORT ... as the test needs them)."""
    service_dir = repo_root() / "services" / target.service
    argv = [service_python(service_dir) if part == "python" else part for part in target.command]
    full_env = dict(
        os.environ, BENCHLAB_HOST="127.0.0.1", PYTHONUNBUFFERED="1", PYTHONPATH=str(target_kit_dir(kit_parent)), **env
    )
    return subprocess.Popen(
        argv, cwd=service_dir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def run_benchlab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real ``benchlab`` command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "benchlab.cli", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def read_csv(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "results.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def assert_healthy_rows(rows: list[dict[str, str]], targets: list[str], tests: tuple[str, ...]) -> None:
    seen = {(r["target"], r["test"]) for r in rows}
    assert seen == {(t, x) for t in targets for x in tests}
    for r in rows:
        where = f"{r['target']} {r['test']} {r['step_id']}"
        # the verifier only warns when a cache filled before other tests' updates is stale
        stale_cache = r["test"] == "cached-queries" and r["verification"].startswith("warn") and "stale cache" in r[
            "verification"
        ]
        assert r["verification"] == "pass" or stale_cache, where
        assert float(r["rps"]) > 0, where
        assert int(r["requests"]) > 0, where
        for kind in ("connect", "read", "write", "timeout", "status"):
            assert int(r[f"errors_{kind}"]) == 0, f"{where}: errors_{kind}={r[f'errors_{kind}']}"
        assert float(r["latency_max_ms"]) > 0, where
        if int(r["pipeline"]) > 1:  # wrk's pipelined latency is unusable (wg/wrk#236): only max kept
            assert r["latency_p50_ms"] == r["latency_mean_ms"] == "", where
        else:  # wrk may still drop a high percentile (same bug): those present must be ordered
            lat = [float(r[f"latency_{p}_ms"]) for p in PERCENTILES if r[f"latency_{p}_ms"]]
            assert r["latency_p50_ms"], where
            assert lat == sorted(lat) and lat[0] > 0, f"{where}: percentiles not ordered {lat}"
        assert float(r["duration_s"]) > 0
        assert r["client_bound"] in ("true", "false")
        assert r["server_cpu_cores"] != "" and float(r["server_cpu_cores"]) >= 0, where
        assert float(r["server_rss_mb"]) > 0, where
        assert r["loadgen_cpu_cores"] != ""
        assert r["started_at"] <= r["finished_at"]


def rows_in(run_dir: Path) -> int:
    path = run_dir / "results.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


class Unavailable(BaseHTTPRequestHandler):
    """A real server whose every answer is a 503 (keep-alive), for status-error counting."""

    protocol_version = "HTTP/1.1"
    delay_s = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        body = b'{"error":"database unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Slow(Unavailable):
    """Answers every request 1.5 s late: past a 1 s client timeout."""

    delay_s = 1.5


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-answer (wrk stopping) is expected here."""


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# PATH without any postgres or pg_config: this interpreter's directory only.
BARE_PATH = str(Path(sys.executable).parent)


def debian_server() -> Path:
    """The newest Debian/Ubuntu server; skipped where none is installed, a failure under CI
    (``.ci/run`` installs it)."""
    for bindir in distribution_bindirs():
        if all(os.access(bindir / name, os.X_OK) for name in ("postgres", "initdb")):
            return bindir
    message = f"no Debian PostgreSQL under {DISTRIBUTIONS} (apt-get install postgresql)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def pgserver_bindir() -> Path:
    import pgserver  # type: ignore[import-untyped]

    return Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"
