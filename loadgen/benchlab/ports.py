"""Local TCP ports: one that is free to listen on, and one clear error for one that is taken."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from benchlab.errors import BenchlabError
from benchlab.target_kit import port_refusal

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20_000  # above the registry's ports (808x) and native runs' (+10000)
TRIES = 200


def _ephemeral_low() -> int:
    """Where the kernel's range for outgoing connections starts (Linux's default: 32768)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on, below the range the kernel hands outgoing connections.

    A port from that range (what binding port 0 returns) may be taken by any client socket, a
    pool's or wrk's, between this call and the server's bind, which then fails with EADDRINUSE.
    """
    low = _ephemeral_low()
    if low - LOWEST >= 1000:
        for _ in range(TRIES):
            port = random.randrange(LOWEST, low)
            if port_refusal("127.0.0.1", port) is None:
                return port
    with socket.socket() as s:  # a machine whose ephemeral range starts low: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, what: str) -> None:
    """A clear error instead of a server failing later with EADDRINUSE."""
    if port_refusal("127.0.0.1", port):
        raise BenchlabError(f"port {port} for {what} is already in use on 127.0.0.1")
