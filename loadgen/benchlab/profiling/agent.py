"""``benchlab profile-agent``: py-spy beside one target, driven over loopback HTTP.

In compose the loadgen shares the host's PID namespace, so it must never hold ptrace. Each
profiled target gets a sidecar instead (compose.profile.yaml) that shares only that target's
PID namespace and alone holds ``CAP_SYS_PTRACE``; this agent runs there, as a user that is not
the target's (it can read the target's memory, not signal it). The loadgen asks it:

- ``GET /status``: whether py-spy may read the target (probed once at start, on the target's
  master, PID 1 of the namespace), and py-spy's version;
- ``POST /start?pid=N&rate=HZ``: record that process tree (``SubprocessRecorder``);
- ``POST /stop``: stop; what went wrong, how long it sampled, its CPU, the processes that died;
- ``GET /profile``: the speedscope JSON of the last recording.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil

from benchlab.errors import BenchlabError
from benchlab.profiling.pyspy import DEFAULT_RATE_HZ, SubprocessRecorder, dump_problem, find_py_spy, py_spy_version

AGENT_HOST = "127.0.0.1"  # loopback only: the loadgen is on the same host (host networking)
AGENT_PORT_OFFSET = 1000  # a target's sidecar listens on its port + this, unless set (.env.example)
PROBING = "probing"
PROBE_WINDOW_S = 120.0  # the target may still be starting when its sidecar does
DENIED = ("permission", "not permitted")  # py-spy's words for a refusal no retry will change


class Agent:
    """The state behind the HTTP handler: the probe's verdict and at most one recording."""

    def __init__(self, target_pid: int, workdir: Path) -> None:
        self.binary = find_py_spy()
        self.version = py_spy_version(self.binary)
        self.target_pid = target_pid
        self.workdir = workdir
        self.probe = PROBING
        self.recorder: SubprocessRecorder | None = None
        self.lock = threading.Lock()

    def run_probe(self) -> None:
        """Dumps the target's master until py-spy reads it, refuses for good, or time runs out."""
        if self.target_pid == os.getpid():
            self.probe = ("the agent is PID 1: its container shares no target's PID namespace "
                          '(compose: pid: "service:<target>")')  # fmt: skip
            return
        deadline = time.monotonic() + PROBE_WINDOW_S
        while True:
            problem = dump_problem(self.binary, self.target_pid) if psutil.pid_exists(self.target_pid) else (
                f"no process {self.target_pid} in this PID namespace")  # fmt: skip
            if problem is None or any(w in problem.lower() for w in DENIED) or time.monotonic() > deadline:
                self.probe = "ok" if problem is None else problem
                return
            time.sleep(1)

    def status(self) -> dict[str, Any]:
        """The probe's verdict, and who the agent runs as: its uid and effective capabilities
        (``CapEff``, hex), for run.json to record what the sidecar was granted."""
        caps = next((ln.split()[1] for ln in Path("/proc/self/status").read_text().splitlines()
                     if ln.startswith("CapEff:")), "unknown")  # fmt: skip
        return {"probe": self.probe, "py_spy": self.version, "target_pid": self.target_pid, "uid": os.geteuid(),
                "capabilities": caps}  # fmt: skip

    def start(self, pid: int, rate_hz: int) -> tuple[HTTPStatus, dict[str, Any]]:
        with self.lock:
            if self.recorder is not None and not self.recorder.seconds:
                return HTTPStatus.CONFLICT, {"error": "a recording is already running"}
            output = self.workdir / "profile.speedscope.json"
            output.unlink(missing_ok=True)
            recorder = SubprocessRecorder(self.binary, pid, output, rate_hz)
            problem = recorder.start()
            if problem:
                return HTTPStatus.UNPROCESSABLE_ENTITY, {"error": problem}
            self.recorder = recorder
            return HTTPStatus.OK, {"recording": pid}

    def stop(self) -> tuple[HTTPStatus, dict[str, Any]]:
        with self.lock:
            if self.recorder is None:
                return HTTPStatus.CONFLICT, {"error": "nothing is being recorded"}
            r = self.recorder
            problem = r.stop()
            return HTTPStatus.OK, {"problem": problem, "seconds": r.seconds, "cpu_seconds": r.cpu_seconds,
                                   "died": r.died}  # fmt: skip


def _handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: HTTPStatus, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode())

        def do_GET(self) -> None:  # http.server's name
            path = urlsplit(self.path).path
            if path == "/status":
                self._json(HTTPStatus.OK, agent.status())
            elif path == "/profile" and agent.recorder is not None and agent.recorder.output.is_file():
                self._send(HTTPStatus.OK, agent.recorder.output.read_bytes())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no {path} here"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/start":
                try:
                    pid = int(query["pid"][0])
                    rate = int(query.get("rate", [str(DEFAULT_RATE_HZ)])[0])
                except (KeyError, ValueError):
                    self._json(HTTPStatus.BAD_REQUEST, {"error": "/start needs ?pid=N (and optionally rate=HZ)"})
                    return
                self._json(*agent.start(pid, rate))
            elif url.path == "/stop":
                self._json(*agent.stop())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no {url.path} here"})

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the compose log

    return Handler


def serve(port: int, target_pid: int = 1, host: str = AGENT_HOST) -> None:
    """Serves until killed; the probe runs beside it so the port answers at once (healthcheck)."""
    with tempfile.TemporaryDirectory(prefix="benchlab-agent-") as tmp:
        agent = Agent(target_pid, Path(tmp))
        threading.Thread(target=agent.run_probe, daemon=True).start()
        try:
            server = ThreadingHTTPServer((host, port), _handler(agent))
        except OSError as exc:
            raise BenchlabError(f"profile agent: cannot listen on {host}:{port}: {exc.strerror}") from exc
        with server:
            print(f"profile agent: py-spy {agent.version} for PID {target_pid}, on http://{host}:{port}", flush=True)
            try:
                server.serve_forever()
            finally:  # SIGTERM (docker stop) unwinds here: a py-spy in its own session would go on
                if agent.recorder is not None and not agent.recorder.seconds:
                    agent.recorder.stop()
