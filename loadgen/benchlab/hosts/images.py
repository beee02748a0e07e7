"""The images a split run needs, built once and loaded onto each host that lacks them.

They are built where ``docker compose build`` builds them, this machine's engine (DOCKER_HOST
or the default socket), from the checkout; a tag already there is used as it is (rebuild
with ``docker compose build`` after editing a service). Each host then gets exactly the
builder's image: a host whose tag names another image ID gets a ``save``/``load`` copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker

from benchlab.config.settings import settings
from benchlab.errors import BenchlabError
from benchlab.hosts.engine import ENGINE_ERRORS, Engine, _why
from benchlab.targets import Target


def db_image() -> str:
    return f"benchlab/db:{settings().image_tag}"


def target_image(target: Target) -> str:
    return f"benchlab/{target.service}:{settings().image_tag}"


def upstream_image() -> str:
    return f"benchlab/upstream:{settings().image_tag}"


def loadgen_image() -> str:
    return f"benchlab/loadgen:{settings().image_tag}"


def _dockerfile(tag: str) -> tuple[str, str]:
    """(context below the checkout, Dockerfile path from the context) as compose.yaml builds it."""
    if tag == db_image():
        return "db", "Dockerfile"
    if tag == loadgen_image():
        return ".", "loadgen/Dockerfile"
    service = tag.split("/", 1)[1].split(":", 1)[0]
    return ".", f"services/{service}/Dockerfile"


def builder() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except ENGINE_ERRORS as exc:
        raise BenchlabError(f"no Docker engine here to build the images on ({_why(exc)})") from None
    return client


def ensure_built(client: docker.DockerClient, tags: list[str], log: Callable[[str], None]) -> dict[str, str]:
    """The image ID of each tag on the builder, built from the checkout when it is missing."""
    from benchlab.harness import repo_root

    ids = {}
    for tag in tags:
        try:
            ids[tag] = client.images.get(tag).id
            continue
        except docker.errors.ImageNotFound:
            pass
        context, dockerfile = _dockerfile(tag)
        log(f"building {tag} (not on this machine's engine)")
        try:
            image, _ = client.images.build(path=str(repo_root() / context), dockerfile=dockerfile, tag=tag, rm=True)
        except docker.errors.BuildError as exc:
            raise BenchlabError(f"building {tag} failed: {exc.msg}") from None
        ids[tag] = image.id
    return ids


def distribute(client: docker.DockerClient, ids: dict[str, str], engine: Engine, tags: list[str],
               log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Makes ``tags`` on ``engine`` the builder's images; what run.json records of them."""
    where = f"{engine.spec.role} host {engine.spec.url}"
    for tag in tags:
        if engine.image_id(tag) == ids[tag]:
            continue
        log(f"loading {tag} onto the {engine.spec.role} host")
        try:
            for status in engine.client.api.load_image(client.images.get(ids[tag]).save()):
                if isinstance(status, dict) and status.get("error"):
                    raise docker.errors.APIError(status["error"])
            # tagged by ID: the builder's tag may have moved on (a rebuild) since it was read
            repository, _, version = tag.rpartition(":")
            engine.client.images.get(ids[tag]).tag(repository, version)
        except ENGINE_ERRORS as exc:
            raise BenchlabError(f"{where}: loading {tag} failed ({_why(exc)})") from None
        if engine.image_id(tag) != ids[tag]:
            raise BenchlabError(f"{where}: {tag} is not the built image after loading")
    return {tag: ids[tag] for tag in tags}
