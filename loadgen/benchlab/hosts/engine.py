"""One host's Docker engine, through Docker's own API (the ``docker`` SDK): connect, describe,
make images present, run and remove the containers of one run.

Every container carries the label ``org.benchlab.run=<token>``, so cleanup finds exactly what
this run started on this host, and nothing of anyone else's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import docker.tls
import requests

from benchlab.errors import BenchlabError
from benchlab.hosts.spec import HostSpec

RUN_LABEL = "org.benchlab.run"
ROLE_LABEL = "org.benchlab.role"
API_TIMEOUT_S = 30
# What a failing engine call raises: the engine's answer, or no answer at all.
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class _EngineCa(docker.APIClient):
    """Verifies the engine against DOCKER_CERT_PATH's CA, always. requests lets REQUESTS_CA_BUNDLE
    or CURL_CA_BUNDLE, when set, replace a session's CA on every request, and then no engine
    certificate verifies; Docker's own CLI reads neither."""

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        settings = super().merge_environment_settings(*args, **kwargs)
        settings["verify"] = self.verify
        return settings


def _client(url: str, timeout_s: float) -> docker.DockerClient:
    scheme = urlsplit(url).scheme
    if scheme == "tcp":
        certs = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
        tls = docker.tls.TLSConfig(
            client_cert=(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem")),
            ca_cert=os.path.join(certs, "ca.pem"), verify=True,
        )  # fmt: skip
        client = docker.DockerClient.__new__(docker.DockerClient)  # its whole state is its APIClient
        client.api = _EngineCa(base_url=url.replace("tcp://", "https://", 1), tls=tls, timeout=timeout_s)
        return client
    if scheme == "ssh":  # the ssh binary and the user's ssh config, as `docker -H ssh://` does
        return docker.DockerClient(base_url=url, use_ssh_client=True, timeout=timeout_s)
    return docker.DockerClient(base_url=url, timeout=timeout_s)


class Engine:
    """A role's host: its client, what it says of itself, and the containers this run started."""

    def __init__(self, spec: HostSpec, token: str) -> None:
        self.spec = spec
        self.token = token
        try:
            self.client = _client(spec.url, API_TIMEOUT_S)
            self.info: dict[str, Any] = self.client.info()
            self.version: dict[str, Any] = self.client.version()
        except ENGINE_ERRORS as exc:
            why = _why(exc)
            raise BenchlabError(f"{spec.role} host {spec.url}: its Docker engine does not answer ({why})") from None

    def describe(self) -> dict[str, Any]:
        """What run.json records of this host: hardware, kernel, Docker, the CPU set given."""
        i = self.info
        return {
            "url": self.spec.url,
            "address": self.spec.address,
            "name": i.get("Name"),
            "cpus": i.get("NCPU"),
            "memory_gb": round((i.get("MemTotal") or 0) / 2**30, 1),
            "kernel": i.get("KernelVersion"),
            "os": i.get("OperatingSystem"),
            "architecture": i.get("Architecture"),
            "docker_version": self.version.get("Version"),
            "docker_api": self.version.get("ApiVersion"),
            "storage_driver": i.get("Driver"),
            "cgroup": f"{i.get('CgroupDriver')} v{i.get('CgroupVersion')}",
            "cpuset": self.spec.cpuset or "not pinned",
        }

    def check_cpuset(self) -> None:
        from benchlab.cpus import cpuset_cpus

        role, cpus = self.spec.role, self.info.get("NCPU") or 0
        if self.spec.cpuset and max(cpuset_cpus(self.spec.cpuset)) >= cpus:
            raise BenchlabError(f"--cpuset {role}={self.spec.cpuset}: the {role} host has {cpus} CPUs")

    def image_id(self, tag: str) -> str | None:
        try:
            return self.client.images.get(tag).id
        except docker.errors.ImageNotFound:
            return None

    def load(self, chunks: Iterator[bytes]) -> None:
        self.client.images.load(b"".join(chunks))

    def create(self, name: str, image: str, command: list[str] | None, env: dict[str, str], **extra: Any) -> Any:
        """A container of this run, not yet started: host networking, the role's CPU set, nofile raised."""
        return self.client.containers.create(
            image, command, name=f"benchlab-{self.token}-{name}", network_mode="host",
            environment=env, cpuset_cpus=self.spec.cpuset, labels={RUN_LABEL: self.token, ROLE_LABEL: self.spec.role},
            ulimits=[docker.types.Ulimit(name="nofile", soft=20000, hard=20000)], **extra,
        )  # fmt: skip

    def run(self, name: str, image: str, command: list[str] | None, env: dict[str, str], **extra: Any) -> Any:
        """Starts a container of this run (``create``, then started)."""
        container = self.create(name, image, command, env, **extra)
        container.start()
        return container

    def wait_healthy(self, container: Any, timeout_s: float) -> None:
        """Until the image's HEALTHCHECK passes; a container that exits is an error with its last log lines."""
        deadline = time.monotonic() + timeout_s
        while True:
            container.reload()
            state = container.attrs["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                return
            if state["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                tail = container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                what = f"exited with {state.get('ExitCode')}" if state["Status"] != "running" else "not healthy"
                raise BenchlabError(
                    f"{self.spec.role} host {self.spec.url}: {container.name} {what} after "
                    f"{timeout_s if what == 'not healthy' else 'start'}: {tail or '(no output)'}"
                )
            time.sleep(1)

    def ours(self) -> list[Any]:
        return self.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={self.token}"})

    def remove_ours(self, stop_s: int = 10) -> list[str]:
        """Stops and removes every container of this run here; the names removed."""
        removed = []
        for c in sorted(self.ours(), key=_stop_order):
            with contextlib.suppress(ENGINE_ERRORS):  # already dead: removed all the same
                c.stop(timeout=stop_s)
            c.remove(force=True)
            removed.append(c.name)
        return removed

    def alive(self) -> bool:
        try:
            return bool(self.client.ping())
        except ENGINE_ERRORS:
            return False


def _stop_order(container: Any) -> tuple[int, bool]:
    """The load generator first, then the targets, then the database's companions, the database last."""
    order = {"loadgen": 0, "targets": 1}.get(container.labels.get(ROLE_LABEL), 2)
    return order, container.name.endswith("-db")


def _why(exc: BaseException) -> str:
    """One line of an engine error: its start (what failed) and its end (the root cause)."""
    lines = str(exc).strip().splitlines()
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 240 else f"{text[:80]} ... {text[-150:]}"
