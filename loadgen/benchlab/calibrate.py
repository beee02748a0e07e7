"""Calibration: how fast can this machine's load generator go at all?

wrk is run against the trivial baseline server (``baseline.py``) on the CPUs the targets
get, sending the json test's request (non-pipelined) and the plaintext test's request
(pipelined), exactly as those tests' steps send them. Those
rates are the ceiling of the client+kernel+loopback on this machine: a target measured
close to them is limited by the client, not by its own stack. The headroom ratio
(baseline rps / the fastest target's rps) says how much room there was; near 1 means the
targets' ranking at the top says little.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchlab.baseline import BaselineServer
from benchlab.contract import TEST_TYPES
from benchlab.cpus import RoleCpus, available, format_cpuset
from benchlab.engines import Load, Request, Wrk
from benchlab.engines.wrk import threads_for
from benchlab.sampling import StepSampler

# The two closed-loop loads compared: TechEmpower's json test (no pipelining) and its
# plaintext test (pipelined); targets' figures for these tests are what headroom compares.
JSON_LIKE, PIPELINED = TEST_TYPES["json"], TEST_TYPES["plaintext"]
LOADS: tuple[str, ...] = (JSON_LIKE.name, PIPELINED.name)
TIGHT_HEADROOM = 2.0  # below this, the client may be what limits the fastest target
BUSY_SHARE = 0.5  # client + server using less than this share of the CPUs: someone else is using them


def run_calibration(
    targets_rps: Mapping[str, float] | None = None,
    cpus: Iterable[int] | None = None,
    connections: int = 64,
    duration_s: float = 5.0,
    *,
    pipelined_connections: int = 256,
    pipeline: int = 16,
    workers: int | None = None,
    raw_dir: Path | None = None,
) -> dict[str, Any]:
    """Baseline rps for json-like (``connections``, no pipelining) and plaintext-like
    (``pipelined_connections``, ``pipeline`` deep) loads and, given the targets' best rps
    (keys naming the target; a key ending in "plaintext" is compared with the pipelined
    load, any other with the json-like one), the headroom ratios."""
    chosen = sorted(cpus) if cpus is not None else sorted(RoleCpus.from_env().targets or available())
    levels = {JSON_LIKE.name: (connections, 1), PIPELINED.name: (pipelined_connections, pipeline)}
    baseline: dict[str, dict[str, Any]] = {}
    with BaselineServer(workers=workers, cpus=chosen) as server:
        for kind, (conns, depth) in levels.items():
            spec = TEST_TYPES[kind]
            request = Request(url=server.url + spec.path_for(), method=spec.method, headers=spec.headers(),
                              body=spec.body)  # fmt: skip
            raw = raw_dir / f"calibrate-{kind}.txt" if raw_dir else None
            with StepSampler(server.url) as sampler:
                m = Wrk().run(request, Load(duration_s=duration_s, connections=conns, pipeline=depth), raw)
            s = sampler.result
            baseline[kind] = {
                "connections": conns, "pipeline": depth, "rps": m.rps, "requests": m.requests,
                "duration_s": m.duration_s, "latency_p99_ms": m.latency_ms.get("p99"),
                "errors": m.socket_errors + m.errors_status,
                "server_cpu_cores": s.server_cpu_cores if s else None,
                "loadgen_cpu_cores": s.loadgen_cpu_cores if s else None,
            }  # fmt: skip
        workers_used = server.workers
    return {
        "engine": "wrk",
        "cpus": format_cpuset(chosen),
        "cpu_count": len(chosen),
        "workers": workers_used,
        "loadgen_threads": {k: threads_for(c) for k, (c, _) in levels.items()},
        "baseline": baseline,
        "targets_rps": dict(targets_rps) if targets_rps else None,
        "headroom": headroom(baseline, targets_rps or {}),
    }


def headroom(baseline: Mapping[str, Mapping[str, Any]], targets_rps: Mapping[str, float]) -> dict[str, Any]:
    """Per load kind: the fastest target and baseline rps / its rps."""
    out: dict[str, Any] = {}
    for kind in LOADS:
        pipelined = kind == PIPELINED.name
        mine = {k: v for k, v in targets_rps.items() if pipelined == k.endswith(PIPELINED.name) and v > 0}
        if not mine:
            continue
        fastest = max(mine, key=lambda k: mine[k])
        out[kind] = {"fastest": fastest, "rps": mine[fastest], "ratio": baseline[kind]["rps"] / mine[fastest]}
    return out


def format_calibration(result: Mapping[str, Any]) -> str:
    """A short human summary of ``run_calibration``'s result."""
    lines = [
        f"engine ceiling: {result['engine']} against a trivial server on CPUs {result['cpus']} "
        f"({result['workers']} worker processes)"
    ]
    for kind, b in result["baseline"].items():
        level = f"c={b['connections']}" + (f" pipeline={b['pipeline']}" if b["pipeline"] > 1 else "")
        cpu = ""
        if b["loadgen_cpu_cores"] is not None:
            cpu = f", wrk+loadgen {b['loadgen_cpu_cores']:.2f} cores"
        if b["server_cpu_cores"] is not None:
            cpu += f", server {b['server_cpu_cores']:.2f} cores"
        errors = f", {b['errors']} errors" if b["errors"] else ""
        lines.append(f"  {kind + '-like':<15} {level:<22} {b['rps']:>12,.0f} req/s{cpu}{errors}")
        used = (b["loadgen_cpu_cores"] or 0) + (b["server_cpu_cores"] or 0)
        if b["loadgen_cpu_cores"] is not None and used < BUSY_SHARE * result["cpu_count"]:
            lines.append(
                f"    note: client and server used {used:.2f} of {result['cpu_count']} CPUs: other work on this "
                "machine is taking them, so this ceiling is low"
            )
    for kind, h in result["headroom"].items():
        note = " (tight: the client may limit the fastest target)" if h["ratio"] < TIGHT_HEADROOM else ""
        lines.append(f"  headroom {kind}: {h['ratio']:.1f}x over {h['fastest']} ({h['rps']:,.0f} req/s){note}")
    if result["targets_rps"] is None:
        lines.append("  (no target figures given: pass a run to compare the fastest target)")
    return "\n".join(lines)
