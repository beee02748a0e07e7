"""The database's CPU and memory for a load generator on another host: ``GET /stats`` beside Postgres.

A remote load generator cannot read Docker's stats API on the database host (that would hand it
the engine, root there), nor see Postgres's processes. So the split lab starts this program on
the database host, in the database container's PID namespace (``pid=container:<db>``), as an
unprivileged user with no capability: it sums what any user may read in ``/proc`` of the
database's process tree, the way ``sampling.processes_cpu_seconds`` sums a local Postgres
(own and reaped children's CPU time), and answers ``{"cpu_seconds", "memory_mb", "pid"}`` the
shape the upstream's ``/stats`` has, so the image's health check passes on it too.

Standard library only: it runs in the upstream image (Python, already on that host) as
``python -c <this file's source>``, bound to the database's address and ``PORT``.
"""

from __future__ import annotations

import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 8078  # run alone; the lab passes settings().db_stats_port (BENCHLAB_DB_STATS_PORT, default the same)
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds incl. reaped children) of a process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICKS  # utime stime cutime cstime


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except OSError:
        return 0.0


def database_stats() -> dict[str, float | int]:
    """The process tree of this namespace's PID 1 (the database), this program left out."""
    procs = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    tree, frontier = {1} & procs.keys(), [1]
    while frontier:
        below = [pid for pid in children.get(frontier.pop(), []) if pid not in tree]
        tree.update(below)
        frontier.extend(below)
    tree.discard(os.getpid())
    return {
        "cpu_seconds": round(sum(procs[p][1] for p in tree), 3),
        "memory_mb": round(sum(_rss_mb(p) for p in tree), 1),
        "pid": 1,
    }


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/stats":
            self.send_error(404)
            return
        body = json.dumps(database_stats()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    host = os.environ.get("BENCHLAB_HOST") or "127.0.0.1"
    port = int(os.environ.get("BENCHLAB_UPSTREAM_PORT") or PORT)  # the variable the image's health check reads
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    type("Server", (ThreadingHTTPServer,), {"address_family": family})((host, port), _Handler).serve_forever()


if __name__ == "__main__":
    main()
