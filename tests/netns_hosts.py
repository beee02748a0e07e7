"""Three machines on one: network namespaces joined by veth pairs, each with its own dockerd.

What ``tests/test_hosts.py`` runs ``benchlab run --hosts`` against. A "switch" namespace holds
a bridge; each host namespace (db, targets, loadgen) gets one veth pair to it and an address
on a private /24 this module picks (``BENCHLAB_TEST_SUBNET``, e.g. ``10.226.7``, and
``BENCHLAB_TEST_NETNS_TAG`` name them when several runs share a machine), so traffic between
the hosts never leaves these namespaces. Each host runs a dockerd of its own (own socket, data
root, exec root, pidfile, cgroup parent; its own containerd under the exec root), started with
``nsenter --net`` (``ip netns exec`` would remount /sys and hide the cgroups dockerd needs),
so its containers, on host networking, live in that namespace. The loadgen host's engine runs
the load generator's container for ``loadgen=URL``; without it the load generator is the
``benchlab`` process, run there with ``nsenter --net``.

The targets host's engine also listens on ``tcp://<its address>:2376`` with TLS (a CA, server
and client certificates made here with openssl, client ones in ``certs``, the DOCKER_CERT_PATH
layout), so ``tcp://`` is driven over the namespaces' network as a user's remote engine is.

Everything lives in a tmpfs of its own (engines' data roots included), so loading images and
removing them cost no disk I/O. ``remove()`` takes it all down (engines, their mounts, data,
namespaces and with them every veth) and ``leftovers()`` says what, if anything, is still there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("db", "targets", "loadgen")
TLS_ROLE = "targets"
TLS_PORT = 2376


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def unusable() -> str | None:
    """Why namespaces with engines cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, dockerd)"
    missing = [tool for tool in ("ip", "nsenter", "dockerd", "docker", "openssl") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)}"
    return None


@dataclass
class Host:
    role: str
    ns: str
    address: str
    base: Path
    engine: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.base / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def netns(self) -> int:
        return os.stat(f"/run/netns/{self.ns}").st_ino

    @property
    def tls_url(self) -> str:
        return f"tcp://{self.address}:{TLS_PORT}"

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "-H", self.url, *args], capture_output=True, text=True, timeout=timeout)


def netns_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@dataclass
class ThreeHosts:
    tag: str = field(default_factory=lambda: os.environ.get("BENCHLAB_TEST_NETNS_TAG") or f"bl{os.getpid() % 100000}")
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="benchlab-hosts-", dir="/var/tmp")))
    hosts: dict[str, Host] = field(default_factory=dict)
    removed: bool = False

    @property
    def certs(self) -> Path:
        """The client's DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)."""
        return self.root / "client-certs"

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def create(self) -> ThreeHosts:
        # The engines' data in memory: loading images and removing them afterwards cost no disk I/O
        # (deleting the extracted layers from disk took 30 s on a busy machine).
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=0700", "benchlab-hosts", str(self.root)],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        subnet = os.environ.get("BENCHLAB_TEST_SUBNET") or f"10.254.{os.getpid() % 200 + 20}"
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, role in enumerate(ROLES, start=1):
            host = Host(role, f"{self.tag}-{role}", f"{subnet}.{i}", self.root / role)
            host.base.mkdir()
            self.hosts[role] = host
            _ip("netns", "add", host.ns)
            _ip("-n", host.ns, "link", "set", "lo", "up")
            veth = (f"to-{role}", "type", "veth", "peer", "name", "eth0", "netns", host.ns)
            _ip("-n", self.switch, "link", "add", *veth)
            _ip("-n", self.switch, "link", "set", f"to-{role}", "master", "br0", "up")
            _ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
        self._make_certs(self.hosts[TLS_ROLE].address)
        for role in ROLES:
            self.start_engine(self.hosts[role])
        return self

    def _make_certs(self, address: str) -> None:
        """A CA, the engine's certificate for ``address`` and a client certificate, as Docker's
        "protect the daemon socket" guide lays them out."""
        d, c = self.root / "server-certs", self.certs
        d.mkdir()
        c.mkdir()

        def ssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60)

        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=benchlab test CA",
            "-keyout", str(d / "ca-key.pem"), "-out", str(d / "ca.pem"))  # fmt: skip
        for name, ext in (("server", f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth"),
                          ("client", "extendedKeyUsage=clientAuth")):  # fmt: skip
            ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}-key.pem"),
                "-out", str(d / f"{name}.csr"))  # fmt: skip
            (d / f"{name}.ext").write_text(ext + "\n")
            ssl("x509", "-req", "-days", "1", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                "-CAkey", str(d / "ca-key.pem"), "-CAcreateserial", "-extfile", str(d / f"{name}.ext"),
                "-out", str(d / f"{name}.pem"))  # fmt: skip
        shutil.copy(d / "ca.pem", c / "ca.pem")
        shutil.copy(d / "client.pem", c / "cert.pem")
        shutil.copy(d / "client-key.pem", c / "key.pem")

    def start_engine(self, host: Host) -> None:
        b = host.base
        argv = [
            "nsenter", f"--net=/run/netns/{host.ns}", "dockerd", "--host", host.url, "--data-root", str(b / "data"),
            "--exec-root", str(b / "exec"), "--pidfile", str(b / "docker.pid"), "--bridge=none", "--iptables=false",
            "--ip-masq=false", "--ip-forward=false", f"--cgroup-parent=benchlab-{host.ns}",
        ]  # fmt: skip
        if host.role == TLS_ROLE:
            d = self.root / "server-certs"
            argv += ["--host", host.tls_url, "--tlsverify", f"--tlscacert={d / 'ca.pem'}",
                     f"--tlscert={d / 'server.pem'}", f"--tlskey={d / 'server-key.pem'}"]  # fmt: skip
        with open(b / "dockerd.log", "wb") as log:
            host.engine = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while host.docker("info", timeout=30).returncode != 0:
            if host.engine.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd for {host.ns} did not start: {(b / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def processes_in(self, host: Host) -> list[int]:
        """Every process whose network namespace is the host's (the "machine"'s processes)."""
        if not Path(f"/run/netns/{host.ns}").exists():
            return []
        want = host.netns
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and netns_of(int(p)) == want]

    def kill_host(self, host: Host) -> None:
        """The machine dies: its engine, containerd, shims and containers, all at once (SIGKILL)."""
        for pid in self.processes_in(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if host.engine is not None:
            host.engine.wait(timeout=30)

    def remove(self) -> None:
        """Engines stopped (their containers first), mounts undone, folders, namespaces and veths gone.
        Idempotent: a test may take the hosts down itself to check what is left."""
        if self.removed:
            return
        self.removed = True
        for role in ROLES:
            host = self.hosts.get(role)
            if host is None or host.engine is None:
                continue
            if host.engine.poll() is None:
                ids = host.docker("ps", "-aq", timeout=60).stdout.split()
                if ids:
                    host.docker("rm", "-f", *ids, timeout=120)
                host.engine.terminate()
                try:
                    host.engine.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    host.engine.kill()
                    host.engine.wait(timeout=30)
            for pid in self.processes_in(host):  # containerd, shims, a killed host's containers
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(self.processes_in(h) for h in self.hosts.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for mount in reversed(self._mounts()):  # the engines' own (overlays, netns), then the tmpfs
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
        for ns in [h.ns for h in self.hosts.values()] + [self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def _mounts(self) -> list[str]:
        prefix = str(self.root) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return sorted(p for p in points if p == str(self.root) or p.startswith(prefix))

    def leftovers(self) -> list[str]:
        """What remove() should have left nothing of: namespaces, engine processes, mounts, folders."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left = [f"namespace {ns}" for ns in [h.ns for h in self.hosts.values()] + [self.switch] if ns in names]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        left += [f"interface to-{r}" for r in ROLES if f"to-{r}" in links]
        for host in self.hosts.values():
            if host.engine is not None and host.engine.poll() is None:
                left.append(f"dockerd of {host.ns}")
        for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines():
            if str(self.root) in line:
                left.append(f"process {line.strip()[:120]}")
        left += [f"mount {m}" for m in self._mounts()]
        if self.root.exists():
            left.append(f"folder {self.root}")
        return left
