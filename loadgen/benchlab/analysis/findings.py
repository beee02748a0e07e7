"""The report's answers: who led each test and by how much, and where the differences come from.

Both compare targets at their own peaks (closed loop): the level with the highest median
throughput, one throughput sample per repeat there, as a ratio with its 95 % interval
(``stats.pooled_log_ratio`` with ``Run.spread``: each target's noise pooled over all its points
in the run, since two repeats alone give an interval too wide to read; claims use the same).
The decomposition follows the registry's facts about each target (framework, server, worker
class, interface, style) rather than names, so a new target joins the right comparisons by its
registry entry alone:
- interface: the bare WSGI app against the bare ASGI app (what "ASGI beats WSGI" can mean);
- framework: a bare app against a framework's TechEmpower-style app on the same server;
- style: that app against the same framework written as its documentation teaches;
- server: a framework's app under another server against the same app under its core server;
- one step per axis the run swept (workers, Python): each target at the sweep's first value against
  itself at the last, the other axes held (``scaling.along``).
Between targets, each is taken at its reference setup (``Run.reference_axes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchlab.analysis.run import Point, Run
from benchlab.analysis.scaling import along
from benchlab.analysis.stats import RatioEstimate, pooled_log_ratio
from benchlab.model.level import AXIS_SHORT, AXIS_TITLE
from benchlab.model.modes import LoadMode
from benchlab.targets import DEFAULT_SELECTION, load_targets

MODE = LoadMode.CLOSED
FACTS = ("framework", "server", "worker_class", "interface", "style", "group")


@dataclass(frozen=True)
class Lead:
    """One test's answer: the leader at its peak, and its ratio over the runner-up."""

    test: str
    leader: str
    peak: Point
    runner_up: str | None
    estimate: RatioEstimate | None  # leader / runner-up

    def sentence(self) -> str:
        head = f"{self.leader} led with {self.peak.rps:,.0f} req/s at {self.peak.label}"
        if self.runner_up is None or self.estimate is None or self.estimate.ratio is None:
            return head + " (no other target measured)"
        return f"{head}, {self.estimate.ratio:.2f}× {self.runner_up} ({_interval(self.estimate)})"


@dataclass(frozen=True)
class Factor:
    """One step of the decomposition: ``other`` / ``base`` on one test, both at their peaks."""

    kind: str  # interface | framework | style | server
    test: str
    base: str
    other: str
    estimate: RatioEstimate

    @property
    def label(self) -> str:
        return f"{self.kind}: {self.base} → {self.other}"

    def reading(self) -> str:
        """The step in words: a clear gain or cost, or no clear difference (interval spans 1)."""
        e = self.estimate
        if e.ratio is None:
            return "not measured"
        if not e.has_interval:
            return f"{e.ratio:.2f}× (no interval: {e.note})"
        assert e.low is not None and e.high is not None
        if e.low <= 1 <= e.high:
            return f"no clear difference ({e.ratio:.2f}×, {_interval(e)})"
        change = f"{(e.ratio - 1) * 100:+.0f} %"
        return f"{change} ({e.ratio:.2f}×, {_interval(e)})"


def _interval(e: RatioEstimate) -> str:
    return f"95 % CI {e.low:.2f}–{e.high:.2f}" if e.has_interval else f"no interval: {e.note}"


def leads(run: Run) -> list[Lead]:
    """Per test, in run order: the target with the highest peak throughput and its margin."""
    out = []
    for test in run.tests:
        peaks = sorted(
            ((t, p) for t in run.targets if (p := run.peak(t, test, MODE)) is not None), key=lambda tp: -tp[1].rps
        )
        if not peaks:
            continue
        (leader, top), rest = peaks[0], peaks[1:]
        if not rest:
            out.append(Lead(test, leader, top, None, None))
            continue
        second, other = rest[0]
        out.append(Lead(test, leader, top, second, ratio(run, other, top)))
    return out


def target_facts(run: Run) -> dict[str, dict[str, Any]]:
    """Each target's registry facts: as run.json recorded them, else as the registry has them."""
    registry = {t.name: {f: getattr(t, f) for f in FACTS} for t in load_targets(["all"], env={})}
    recorded = run.meta.get("targets")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    out = {}
    for name in run.targets:
        entry = recorded.get(name) if isinstance(recorded.get(name), Mapping) else {}
        facts = {f: entry.get(f) or registry.get(name, {}).get(f) for f in FACTS}
        if all(facts.values()):
            out[name] = facts
    return out


def pairs(facts: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, base, other) for every comparison the targets allow, in a fixed order."""

    def same(a: str, b: str, *keys: str) -> bool:
        return all(facts[a][k] == facts[b][k] for k in keys)

    names = list(facts)
    bare = [n for n in names if facts[n]["style"] == "bare"]
    tfb = [n for n in names if facts[n]["style"] == "tfb"]
    idiomatic = [n for n in names if facts[n]["style"] == "idiomatic"]
    out = [("interface", w, a) for w in bare for a in bare if facts[w]["interface"] == "wsgi" != facts[a]["interface"]]
    out += [("framework", b, t) for t in tfb for b in bare if same(b, t, "interface", "server", "worker_class")]
    out += [("style", t, i) for i in idiomatic for t in tfb if same(t, i, "framework", "server", "worker_class")]
    for framework in dict.fromkeys(facts[n]["framework"] for n in tfb):
        mine = [n for n in tfb if facts[n]["framework"] == framework]
        core = [n for n in mine if facts[n]["group"] == DEFAULT_SELECTION] or mine
        out += [("server", core[0], n) for n in mine if n != core[0]]
    return out


def decomposition(run: Run) -> list[Factor]:
    """Every comparison of ``pairs`` on every test both targets were measured on, then the axes' steps."""
    out = []
    for kind, base, other in pairs(target_facts(run)):
        for test in run.tests:
            a, b = run.peak(base, test, MODE), run.peak(other, test, MODE)
            if a is not None and b is not None:
                out.append(Factor(kind, test, base, other, ratio(run, a, b)))
    return out + axis_steps(run)


def axis_steps(run: Run) -> list[Factor]:
    """Per swept axis, target and test: the target at the first value of the sweep → at the last."""
    out = []
    for axis in run.varying_axes:
        short = AXIS_SHORT[axis]
        for test in run.tests:
            for target in run.targets:
                found = along(run, axis, target, test)
                if len(found) >= 2:
                    (v0, a), (v1, b) = found[0], found[-1]
                    out.append(Factor(AXIS_TITLE[axis], test, f"{target} {short}={v0}", f"{target} {short}={v1}",
                                      ratio(run, a, b)))  # fmt: skip
    return out


def ratio(run: Run, a: Point, b: Point) -> RatioEstimate:
    """``b``'s throughput over ``a``'s, the interval from each target's noise over the run."""
    spread_a, spread_b = (run.spread(p.target, "rps", MODE) for p in (a, b))
    return pooled_log_ratio(a.rps_samples, b.rps_samples, spread_a, spread_b)
