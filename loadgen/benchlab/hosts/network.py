"""Round-trip times between the hosts, measured once at the start of a split run.

A TCP connect costs one round trip (SYN, SYN-ACK), so the median connect time to a port that
listens is the network's round trip plus the remote kernel's accept work: the noise floor a
run's latencies sit on. From the load generator: to the targets and to the database; between
the targets and the database: the same measure run inside a target container there.
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import Any

PROBES = 21

# The same measure inside a target container (its image has Python): prints the median ms.
REMOTE_PROBE = (
    "import socket,statistics,sys,time\n"
    "h,p,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]);ms=[]\n"
    "for _ in range(n):\n"
    "    t=time.perf_counter();s=socket.create_connection((h,p),5);ms.append((time.perf_counter()-t)*1e3);s.close()\n"
    "print(round(statistics.median(ms),3))\n"
)


def connect_rtt_ms(host: str, port: int, probes: int = PROBES) -> float | None:
    """The median TCP connect time to ``host:port`` in ms; None when it does not accept."""
    times = []
    for _ in range(probes):
        start = time.perf_counter()
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError:
            return None
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 3)


def rtt_in_container(container: object, host: str, port: int, probes: int = PROBES) -> float | None:
    """``connect_rtt_ms`` run inside ``container`` (a docker SDK Container): from its host."""
    try:
        code, out = container.exec_run(["python", "-c", REMOTE_PROBE, host, str(port), str(probes)])  # type: ignore[attr-defined]
        return float(out.decode().strip().splitlines()[-1]) if code == 0 else None
    except Exception:  # an engine error or a malformed answer: the figure is unknown, the run goes on
        return None


def rtt_from_host(engine: Any, image: str, host: str, port: int, probes: int = PROBES) -> float | None:
    """``connect_rtt_ms`` from ``engine``'s host (a ``hosts.engine.Engine``): a short-lived container
    of ``image`` (which has Python) on host networking there, removed again."""
    try:
        container = engine.run("rtt-probe", image, ["python", "-c", REMOTE_PROBE, host, str(port), str(probes)], {},
                               entrypoint=[], user="10001:10001", cap_drop=["ALL"])  # fmt: skip
        try:
            code = container.wait(timeout=60).get("StatusCode")
            out = container.logs(stdout=True, stderr=False)
        finally:
            container.remove(force=True)
        return float(out.decode().strip().splitlines()[-1]) if code == 0 else None
    except Exception:  # an engine error or a malformed answer: the figure is unknown, the run goes on
        return None


def describe_rtt(rtt: dict[str, float | None]) -> str:
    return ", ".join(f"{pair} {'–' if ms is None else f'{ms:.3f} ms'}" for pair, ms in rtt.items())
