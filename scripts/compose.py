"""Write the registry's targets into the compose files and .env.example.

The registry (loadgen/benchlab/targets.toml) is the one place a target is described; the
compose files hold hand-written settings around regions this script owns, between
``# >>> NAME`` and ``# <<< NAME`` lines. After adding or changing a target:

    python scripts/compose.py           # rewrite the regions
    python scripts/compose.py --check   # exit 1, naming each stale region (tests/test_compose.py)

Core targets start with a plain ``docker compose up``; every other target is under the
profiles ``matrix`` and its group (``docker compose --profile matrix up`` starts all of them).
The loadgen waits only for the core ones (Compose v2 refuses a ``depends_on`` naming a service
of an inactive profile); it finds the started groups itself (benchlab/lab.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchlab.profiling.agent import AGENT_PORT_OFFSET
from benchlab.targets import DEFAULT_SELECTION, Target, load_targets

ROOT = Path(__file__).resolve().parents[1]
MATRIX_PROFILE = "matrix"
PROFILER_SUFFIX = "-profiler"  # compose.profile.yaml: <target>-profiler, its py-spy sidecar
REGION = re.compile(r"^(?P<indent>[ ]*)# >>> (?P<name>[\w-]+)\n(?P<body>.*?)^(?P=indent)# <<< (?P=name)\n", re.M | re.S)


def port_var(t: Target) -> str:
    return f"${{BENCHLAB_PORT_{t.env_key}:-{t.port}}}"


def profiles(t: Target) -> list[str]:
    return [] if t.group == DEFAULT_SELECTION else [f"profiles: [{MATRIX_PROFILE}, {t.group}]"]


def compose_targets(targets: list[Target]) -> list[str]:
    """One service per target; the first target of a service folder defines its build."""
    lines: list[str] = []
    built: set[str] = set()
    for t in targets:
        lines += [f"{t.name}:", "  <<: *target", *(f"  {p}" for p in profiles(t))]
        if t.service in built:
            lines.append(f"  build: *{t.service}-build")
        else:
            built.add(t.service)
            lines += [
                f"  build: &{t.service}-build",
                "    context: .",
                f"    dockerfile: services/{t.service}/Dockerfile",
                "    args: *target-python-image",
            ]
        lines += [
            f"  image: benchlab/{t.service}:${{BENCHLAB_IMAGE_TAG:-local}}",
            f"  command: {json.dumps(list(t.command))}",
            "  environment:",
            "    <<: *target-env",
            f"    BENCHLAB_PORT: {port_var(t)}",
            "",
        ]
    return lines


def core_depends(targets: list[Target], suffix: str = "") -> list[str]:
    """The loadgen's wait for each core target's service (``suffix``: its sidecar's) to be healthy."""
    lines: list[str] = []
    for t in targets:
        if t.group == DEFAULT_SELECTION:
            lines += [f"{t.name}{suffix}:", "  condition: service_healthy"]
    return lines


def loadgen_ports(targets: list[Target]) -> list[str]:
    return [f"BENCHLAB_PORT_{t.env_key}: {port_var(t)}" for t in targets]


def bridge_targets(targets: list[Target]) -> list[str]:
    lines: list[str] = []
    for t in targets:
        if t.group != DEFAULT_SELECTION:
            continue
        publish = f"${{BENCHLAB_PUBLISH:-127.0.0.1}}:{port_var(t)}:{port_var(t)}"
        lines += [
            f"{t.name}:",
            "  network_mode: bridge",
            "  links: [db, upstream]",
            "  environment:",
            "    BENCHLAB_HOST: 0.0.0.0",
            "    DATABASE_URL: *dsn",
            "    UPSTREAM_URL: *upstream",
            "  ports:",
            f"    - {publish}",
            "",
        ]
    return lines


def bridge_links(targets: list[Target]) -> list[str]:
    core = [t.name for t in targets if t.group == DEFAULT_SELECTION]
    return [f"links: [db, upstream, {', '.join(core)}]"]


def bridge_urls(targets: list[Target]) -> list[str]:
    return [
        f"BENCHLAB_URL_{t.env_key}: http://{t.name}:{port_var(t)}" for t in targets if t.group == DEFAULT_SELECTION
    ]


def split_targets(targets: list[Target]) -> list[str]:
    return [line for t in targets for line in (f"{t.name}:", "  profiles: [targets]")]


def profiler_port_var(t: Target) -> str:
    return f"${{BENCHLAB_PROFILE_PORT_{t.env_key}:-{t.port + AGENT_PORT_OFFSET}}}"


def profilers(targets: list[Target]) -> list[str]:
    """One py-spy sidecar per target, in its target's PID namespace and profiles."""
    lines: list[str] = []
    for t in targets:
        port = profiler_port_var(t)
        lines += [
            f"{t.name}{PROFILER_SUFFIX}:",
            "  <<: *profiler",
            *(f"  {p}" for p in profiles(t)),
            f'  pid: "service:{t.name}"',
            f'  command: ["benchlab", "profile-agent", "--port", "{port}"]',
            "  environment:",
            "    HOME: /tmp",
            f"    BENCHLAB_AGENT_URL: http://127.0.0.1:{port}",
            "",
        ]
    return lines


def profiler_ports(targets: list[Target]) -> list[str]:
    return [f"BENCHLAB_PROFILE_PORT_{t.env_key}: {profiler_port_var(t)}" for t in targets]


def core_profilers(targets: list[Target]) -> list[str]:
    return core_depends(targets, PROFILER_SUFFIX)


def env_profiler_ports(targets: list[Target]) -> list[str]:
    return [f"#BENCHLAB_PROFILE_PORT_{t.env_key}={t.port + AGENT_PORT_OFFSET}" for t in targets]


def env_ports(targets: list[Target]) -> list[str]:
    return [f"#BENCHLAB_PORT_{t.env_key}={t.port}" for t in targets]


Generator = Callable[[list[Target]], list[str]]
PROFILE_OVERLAY: dict[str, Generator] = {
    "profilers": profilers, "profiler-ports": profiler_ports, "core-profilers": core_profilers,
}  # fmt: skip
FILES: dict[str, dict[str, Generator]] = {
    "compose.yaml": {"targets": compose_targets, "core-targets": core_depends, "target-ports": loadgen_ports},
    "compose.bridge.yaml": {"targets": bridge_targets, "target-links": bridge_links, "target-urls": bridge_urls},
    "compose.split.yaml": {"targets": split_targets},
    "compose.profile.yaml": PROFILE_OVERLAY,
    ".env.example": {"target-ports": env_ports, "profiler-ports": env_profiler_ports},
}


def render(text: str, regions: dict[str, Generator], targets: list[Target], where: str) -> str:
    """``text`` with each region's body regenerated; a region missing from the file is an error."""
    seen: set[str] = set()

    def body(match: re.Match[str]) -> str:
        name, indent = match["name"], match["indent"]
        if name not in regions:
            raise SystemExit(f"{where}: unknown region {name!r} (known: {', '.join(regions)})")
        seen.add(name)
        lines = [f"{indent}{line}".rstrip() for line in regions[name](targets)]
        while lines and not lines[-1]:
            lines.pop()
        return f"{indent}# >>> {name}\n" + "".join(f"{line}\n" for line in lines) + f"{indent}# <<< {name}\n"

    out = REGION.sub(body, text)
    missing = set(regions) - seen
    if missing:
        raise SystemExit(f"{where}: no region {', '.join(sorted(missing))} (add '# >>> NAME' / '# <<< NAME' lines)")
    return out


def stale_files(root: Path = ROOT, write: bool = False) -> list[str]:
    """The files whose regions differ from the registry (rewritten when ``write``)."""
    targets = load_targets(["all"], env={})
    stale = []
    for name, regions in FILES.items():
        path = root / name
        text = path.read_text()
        new = render(text, regions, targets, name)
        if new != text:
            stale.append(name)
            if write:
                path.write_text(new)
    return stale


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date; write nothing")
    args = parser.parse_args(argv)
    stale = stale_files(write=not args.check)
    if args.check and stale:
        print(f"out of date with targets.toml: {', '.join(stale)}; run: python scripts/compose.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
