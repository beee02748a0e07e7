"""``benchlab compare RUN_A RUN_B``: what changed between two runs, and is it more than noise.

Each target x test x mode x level is compared on median throughput and median p99
latency. Each change is tested with Welch's t on log values across repeats (suits the 2..5
repeats a lab runs; noise in rps and latency is multiplicative). One comparison makes dozens
of such tests, so at α = 5 % a few would be "significant" by chance alone: the p-values of
all tests are Benjamini-Hochberg adjusted (q), and a change is significant, and can fail
``--fail-above``, only when q < α (false discovery rate 5 %). With fewer than two repeats a
side the change is shown as ``~`` (not significant), as benchstat does, never as a finding.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from benchlab.analysis.run import Point, Run, load_run
from benchlab.analysis.stats import ALPHA, RatioEstimate, bh_adjust, welch_log_ratio
from benchlab.errors import BenchlabError
from benchlab.model.level import AXIS_NAMES, AXIS_SHORT, Level
from benchlab.model.modes import LoadMode

COMPARE_CSV = "compare.csv"  # in RUN_B unless --csv says otherwise

# run.json keys that describe the setup; the rest (ids, times, status) differ on every run.
SETUP_KEYS = (
    "host", "cpus", "targets", "engines", "mode", "scenario_name", "scenario", "benchlab_version",
    "git_commit", "nofile_limit", "python",
)  # fmt: skip
CSV_COLUMNS: tuple[str, ...] = (
    "target", "test", "mode", "level", "concurrency", "pipeline", "queries", "offered_rps", "offered_rps_b", "present",
    "n_a", "n_b", "rps_a", "rps_b", "rps_change_pct", "rps_p", "rps_q", "rps_significant",
    "p99_a_ms", "p99_b_ms", "p99_change_pct", "p99_p", "p99_q", "p99_significant", "flags_a", "flags_b", "regression",
    *AXIS_NAMES,
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    """One metric of one row: medians of A and B, relative change, its p and BH-adjusted q."""

    a: float | None
    b: float | None
    estimate: RatioEstimate | None
    q: float | None = None  # set once all tests of the comparison are known

    @property
    def p(self) -> float | None:
        return None if self.estimate is None else self.estimate.p_value

    @property
    def pct(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b / self.a - 1) * 100

    @property
    def significant(self) -> bool:
        """On the adjusted q, so a raw p < α among dozens of tests is not taken for a finding."""
        return self.q is not None and self.q < ALPHA

    def text(self) -> str:
        """``-31.2% (p=0.004)``, or ``~ +3.0% (p=0.041)`` / ``~ (n=1 vs 1)`` when not significant (on q)."""
        pct, est = self.pct, self.estimate
        if pct is None or est is None:
            return "-"
        if est.p_value is None:
            return f"~ (n={est.n})"
        p = f"p={est.p_value:.3f}" if est.p_value >= 0.001 else "p<0.001"
        return f"{pct:+.1f}% ({p})" if self.significant else f"~ {pct:+.1f}% ({p})"

    def q_text(self) -> str:
        if self.q is None:
            return "-"
        return f"{self.q:.3f}" if self.q >= 0.001 else "<0.001"


@dataclass(frozen=True)
class ComparisonRow:
    target: str
    test: str
    mode: str
    axes: tuple[tuple[str, Any], ...]  # (axis, value) of the axes either run swept
    level: Level
    present: str  # "both", "only A", "only B"
    n_a: int
    n_b: int
    rps: Change
    p99: Change
    flags_a: tuple[str, ...]
    flags_b: tuple[str, ...]
    offered_b: float | None = None  # B's open-loop rate when paired by rank with A's

    @property
    def level_text(self) -> str:
        swept = " ".join(f"{AXIS_SHORT[a]}={v}" for a, v in self.axes if v is not None)
        text = " ".join(filter(None, (swept, self.level.label)))
        return text if self.offered_b is None else f"{text} (B: {self.offered_b:g})"

    def regression(self, threshold_pct: float) -> str:
        """Why this row is a significant regression beyond the threshold, or ``""``."""
        reasons = []
        if self.rps.significant and self.rps.pct is not None and self.rps.pct < -threshold_pct:
            reasons.append(f"rps {self.rps.pct:+.1f}%")
        if self.p99.significant and self.p99.pct is not None and self.p99.pct > threshold_pct:
            reasons.append(f"p99 {self.p99.pct:+.1f}%")
        return ", ".join(reasons)

    @property
    def key(self) -> str:
        return f"{self.target} {self.test} {self.mode} {self.level_text}"


@dataclass
class ComparisonResult:
    run_a: Run
    run_b: Run
    table: list[ComparisonRow]
    differences: list[tuple[str, str, str]]
    fail_above: float | None
    regressions: list[str] = field(default_factory=list)

    @property
    def tests(self) -> int:
        """How many tests the BH adjustment was made over (every row x metric with a p-value)."""
        return sum(c.p is not None for r in self.table for c in (r.rps, r.p99))

    @property
    def exit_code(self) -> int:
        """1 when ``--fail-above`` was given and a significant regression exceeds it, else 0."""
        return 1 if self.regressions else 0

    def render_text(self, width: int = 200) -> str:
        console = Console(file=io.StringIO(), width=width, record=True, color_system=None, soft_wrap=True)
        console.print(f"A: {self.run_a.run_id}  ({self.run_a.path})")
        console.print(f"B: {self.run_b.run_id}  ({self.run_b.path})")
        for name, run in (("A", self.run_a), ("B", self.run_b)):
            status = run.meta.get("status")
            if status != "complete":
                console.print(f"! run {name} status is {status or 'unknown'}: it may lack steps")
        if self.differences:
            console.print("Setup differs (run.json), so changes may come from these as well as from the code:")
            for key, a, b in self.differences:
                console.print(f"  {key}: {a} -> {b}")
        else:
            console.print("Setup: same host, cpusets, targets, packages and engines (run.json).")
        console.print(_table(self.table, self.tests))
        console.print(
            "change = median B / median A - 1; p = Welch t on log values across repeats; "
            "q = p adjusted for the number of tests (Benjamini-Hochberg); "
            f"'~' = not significant (q >= {ALPHA:g} or too few repeats). ! = flagged step "
            "(client-bound, errors or drops). Open-loop rates set from each run's own peak are paired "
            "by rank ('B:' shows B's rate)."
        )
        if self.fail_above is not None:
            if self.regressions:
                console.print(f"FAIL: significant regressions beyond {self.fail_above:g}%:")
                for line in self.regressions:
                    console.print(f"  {line}")
            else:
                console.print(f"OK: no significant regression beyond {self.fail_above:g}%.")
        return console.export_text().rstrip("\n")

    def write_csv(self, path: Path) -> None:
        try:
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
                writer.writeheader()
                for row in self.table:
                    writer.writerow(_csv_row(row, self.fail_above))
        except OSError as exc:
            raise BenchlabError(f"cannot write {path}: {exc.strerror}") from exc


def compare_runs(
    run_a: Path, run_b: Path, fail_above: float | None = None, out_csv: Path | None = None
) -> ComparisonResult:
    """Compares two run directories; writes the table as CSV when ``out_csv`` is given (the CLI
    always gives one: ``RUN_B/compare.csv`` or ``--csv``)."""
    if fail_above is not None and fail_above < 0:
        raise BenchlabError(f"--fail-above expects a percentage >= 0, got {fail_above:g}")
    a, b = load_run(Path(run_a)), load_run(Path(run_b))
    rows = _rows(a, b)
    result = ComparisonResult(a, b, rows, setup_differences(a.meta, b.meta), fail_above)
    if fail_above is not None:
        result.regressions = [f"{r.key}: {why}" for r in rows if (why := r.regression(fail_above))]
    if out_csv is not None:
        result.write_csv(Path(out_csv))
    return result


@dataclass(frozen=True)
class Key:
    """What pairs a point of A with one of B: the axes either run swept count, the others
    (a run recorded before they existed, or held still) are setup, listed apart."""

    target: str
    test: str
    mode: str
    axes: tuple[tuple[str, Any], ...]
    level: Level


def _rows(a: Run, b: Run) -> list[ComparisonRow]:
    swept = tuple(n for n in AXIS_NAMES if n in a.varying_axes or n in b.varying_axes)

    def key(p: Point) -> Key:
        return Key(p.target, p.test, str(p.mode), tuple((n, p.axes.value(n)) for n in swept), p.level)

    pa = {key(p): p for p in a.points}
    pb = {key(p): p for p in b.points}
    pb = {_open_rank_match(k, pa, pb): p for k, p in pb.items()}
    order = {t: i for i, t in enumerate(a.targets + [t for t in b.targets if t not in a.targets])}
    tests = a.tests + [t for t in b.tests if t not in a.tests]
    keys = sorted(
        set(pa) | set(pb),
        key=lambda k: (tests.index(k.test), order[k.target], k.mode, [str(v) for _, v in k.axes], k.level.sort_key),
    )
    return _adjusted([_row(k, pa.get(k), pb.get(k)) for k in keys])


def _adjusted(rows: list[ComparisonRow]) -> list[ComparisonRow]:
    """The rows with q set: one BH adjustment over every test of the comparison, rps and p99 alike."""
    qs = iter(bh_adjust([c.p for r in rows for c in (r.rps, r.p99)]))
    return [replace(r, rps=replace(r.rps, q=next(qs)), p99=replace(r.p99, q=next(qs))) for r in rows]


def _open_rank_match(key: Key, pa: Mapping[Key, Point], pb: Mapping[Key, Point]) -> Key:
    """B's key as A names it: open-loop rates derived from each run's own peak differ between runs,
    so when both runs offered the same number of rates, the i-th lowest of B pairs with A's i-th."""
    if key.mode != LoadMode.OPEN or key in pa:
        return key

    def rates(points: Mapping[Key, Point]) -> list[float]:
        same = [k for k in points if replace(k, level=k.level.without_rate()) == sweep]
        return sorted(k.level.offered_rps or 0.0 for k in same)

    sweep = replace(key, level=key.level.without_rate())
    ra, rb = rates(pa), rates(pb)
    if len(ra) != len(rb) or set(ra) & set(rb):
        return key
    return replace(key, level=key.level.with_rate(ra[rb.index(key.level.offered_rps or 0.0)]))


def _row(key: Key, a: Point | None, b: Point | None) -> ComparisonRow:
    def change(metric: str) -> Change:
        sa = a.metric_samples(metric) if a else []
        sb = b.metric_samples(metric) if b else []
        est = welch_log_ratio(sa, sb) if sa and sb else None
        return Change(a.median(metric) if a else None, b.median(metric) if b else None, est)

    return ComparisonRow(
        offered_b=b.level.offered_rps if b and a and b.level != a.level else None,
        target=key.target,
        test=key.test,
        mode=key.mode,
        axes=key.axes,
        level=key.level,
        present="both" if a and b else ("only A" if a else "only B"),
        n_a=len(a.rps_samples) if a else 0,
        n_b=len(b.rps_samples) if b else 0,
        rps=change("rps"),
        p99=change("latency_p99_ms"),
        flags_a=a.flags if a else (),
        flags_b=b.flags if b else (),
    )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(rows: list[ComparisonRow], tests: int) -> Table:
    caption = (
        f"significant = Benjamini-Hochberg adjusted q < {ALPHA:g} over all {tests} tests (FDR {ALPHA * 100:g} %)"
        if tests
        else "no significance tests: fewer than two repeats a side"
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, caption=caption, caption_justify="left")
    for name, justify in (
        ("target", "left"), ("test", "left"), ("mode", "left"), ("level", "left"), ("n A/B", "right"),
        ("rps A", "right"), ("rps B", "right"), ("rps change", "right"), ("rps q", "right"),
        ("p99 A ms", "right"), ("p99 B ms", "right"), ("p99 change", "right"), ("p99 q", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        mark_a = " !" if r.flags_a else ""
        mark_b = " !" if r.flags_b else ""
        table.add_row(
            r.target, r.test, r.mode, r.level_text, f"{r.n_a}/{r.n_b}",
            _num(r.rps.a) + mark_a, _num(r.rps.b) + mark_b, r.rps.text() if r.present == "both" else r.present,
            r.rps.q_text(), _num(r.p99.a, 2), _num(r.p99.b, 2), r.p99.text() if r.present == "both" else "",
            r.p99.q_text(),
        )  # fmt: skip
    return table


def _csv_row(row: ComparisonRow, fail_above: float | None) -> dict[str, Any]:
    def p(value: float | None) -> Any:
        return "" if value is None else f"{value:.4g}"

    def r(value: float | None, digits: int) -> Any:
        return "" if value is None else round(value, digits)

    return {
        "target": row.target, "test": row.test, "mode": row.mode, "level": row.level_text,
        "concurrency": r(row.level.concurrency, 0), "pipeline": r(row.level.pipeline, 0),
        "queries": r(row.level.queries, 0), "offered_rps": r(row.level.offered_rps, 3),
        **{a: v for a, v in row.axes}, "offered_rps_b": r(row.offered_b, 3), "present": row.present,
        "n_a": row.n_a, "n_b": row.n_b,
        "rps_a": r(row.rps.a, 2), "rps_b": r(row.rps.b, 2), "rps_change_pct": r(row.rps.pct, 2),
        "rps_p": p(row.rps.p), "rps_q": p(row.rps.q), "rps_significant": str(row.rps.significant).lower(),
        "p99_a_ms": r(row.p99.a, 3), "p99_b_ms": r(row.p99.b, 3), "p99_change_pct": r(row.p99.pct, 2),
        "p99_p": p(row.p99.p), "p99_q": p(row.p99.q), "p99_significant": str(row.p99.significant).lower(),
        "flags_a": "; ".join(row.flags_a), "flags_b": "; ".join(row.flags_b),
        "regression": row.regression(fail_above) if fail_above is not None else "",
    }  # fmt: skip


def setup_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(dotted.key, value in A, value in B)`` for every setup fact that differs between two runs."""
    fa, fb = {}, {}
    for key in SETUP_KEYS:
        fa.update(_flatten(a.get(key), key))
        fb.update(_flatten(b.get(key), key))
    missing = "(missing)"
    return [(k, fa.get(k, missing), fb.get(k, missing)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _flatten(value: Any, prefix: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if value is None:
        return {}
    return {prefix: value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)}
