"""report.html, summary.csv and chart PNGs from a real smoke run, checked in a real headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from derived_runs import copy_run, edit_run_json, rewrite_rows, successful, with_copies, with_repeats
from helpers import run_benchlab
from matplotlib import image

from benchlab.analysis.analyse import SUMMARY_COLUMNS
from benchlab.errors import BenchlabError
from benchlab.model.codec import COLUMNS, CSV_NAME, read_rows
from benchlab.report.build import CHARTS_DIR, SUMMARY_CSV, build_report
from benchlab.rundir import RUN_JSON

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
)  # fmt: skip


@pytest.fixture(scope="module")
def report(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html built from a copy of the real smoke run."""
    run = copy_run(smoke_run, tmp_path_factory.mktemp("report") / "run")
    return build_report(run)


def non_blank(png: bytes | Path) -> bool:
    """True when an image has real content: enough non-white pixels and contrast."""
    pixels = image.imread(io.BytesIO(png) if isinstance(png, bytes) else png, format="png")[..., :3]
    grey = pixels.mean(axis=2)
    return float((grey < 0.9).mean()) > 0.01 and float(grey.std()) > 0.05


def chart_ids(html: str) -> list[str]:
    return re.findall(r'<figure id="chart-([^"]+)" class="chart"', html)


# ---------------------------------------------------------------- files


def test_report_files(report: Path) -> None:
    run_dir = report.parent
    rows = [r for r in read_rows(run_dir) if successful(r)]
    html = report.read_text(encoding="utf-8")
    with (run_dir / SUMMARY_CSV).open(newline="") as fh:
        reader = csv.DictReader(fh)
        summary = list(reader)
    assert tuple(reader.fieldnames or ()) == SUMMARY_COLUMNS
    # One summary row per target x test x mode that ran; peaks are the best median of the CSV.
    assert {(r["target"], r["test"], r["mode"]) for r in summary} == {
        (r["target"], r["test"], r["mode"]) for r in read_rows(run_dir)
    }
    for s in summary:
        mine = [
            float(r["rps"]) for r in rows if (r["target"], r["test"], r["mode"]) == (s["target"], s["test"], s["mode"])
        ]
        if mine:
            assert float(s["peak_rps"]) == pytest.approx(max(mine), rel=1e-3)
            assert s["peak_level"]
    ids = chart_ids(html)
    for test in {r["test"] for r in rows}:
        assert f"peak-{test}" in ids
        if any(float(r["latency_p50_ms"] or 0) > 0 for r in rows if r["test"] == test):
            assert f"latency-{test}" in ids
        levels = {(r["target"], r["concurrency"], r["queries"]) for r in rows if r["test"] == test}
        if len(levels) > len({r["target"] for r in rows if r["test"] == test}):
            assert f"scaling-{test}" in ids
    assert "resources" in ids
    for name in ids:
        png = run_dir / CHARTS_DIR / f"{name}.png"
        assert png.is_file() and non_blank(png), name
    for target in {r["target"] for r in rows}:
        assert target in html
    assert 'id="claims"' in html and re.search(r'class="verdict v-(holds|does-not-hold|inconclusive)"', html)


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"\bsrc\s*=", html)
    assert re.findall(r'href="([^"#][^"]*)"', html) == []  # only in-page anchors
    assert set(re.findall(r"url\((.)", html)) <= {"#"}  # only in-page SVG references
    # Every SVG id is unique on the page, so clip paths of one chart never apply to another.
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_charts_name_units_hardware_and_cpusets(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    meta = json.loads((report.parent / RUN_JSON).read_text())
    for figure in re.findall(r"<figure .*?</figure>", html, flags=re.S):
        svg_text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", figure))
        assert re.search(r"\((requests/s|ms[^)]*|cores|MB)\)|requests/s", svg_text), svg_text[:200]
        assert "cpusets:" in svg_text and "host:" in svg_text
        if meta.get("host", {}).get("cpu_model"):
            assert meta["host"]["cpu_model"].split()[0] in svg_text


def test_flagged_steps_are_marked(smoke_run: Path, tmp_path: Path) -> None:
    """Client-bound steps and steps with errors are marked in the summary, tables and charts."""
    run = copy_run(smoke_run, tmp_path / "run")
    marks = {"json": ("client_bound", "true", "client-bound"), "db": ("errors_timeout", "7", "7 errors")}

    def flag(row: dict[str, str]) -> list[dict[str, str]]:
        if successful(row) and row["mode"] == "closed" and row["test"] in marks:
            column, value, _ = marks[row["test"]]
            row[column] = value
        return [row]

    rewrite_rows(run, flag)
    edit_run_json(run, lambda meta: meta.update(status="interrupted"))
    html = build_report(run).read_text(encoding="utf-8")
    with (run / SUMMARY_CSV).open(newline="") as fh:
        summary = [r for r in csv.DictReader(fh) if r["mode"] == "closed" and r["test"] in marks]
    assert summary
    for row in summary:
        assert marks[row["test"]][2] in row["flags"]
        assert re.search(rf'<tr class="flag[^"]*">\s*<td class="t">{row["target"]}', html)
    for chart in ("peak-json", "latency-json", "peak-db"):
        assert f'id="chart-{chart}" class="chart" data-flagged="true"' in html
    assert "client-bound, errors, drops or a warning: do not quote" in html
    assert 'id="status-banner"' in html and "interrupted" in html


def test_missing_optional_metadata_reads_unknown(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path / "run")
    edit_run_json(run, lambda meta: [meta.pop(k) for k in list(meta) if k != "run_id"])
    html = build_report(run).read_text(encoding="utf-8")
    assert "unknown" in html
    assert 'id="status-banner"' in html  # no status recorded: not known to be complete


def test_user_claims_file(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path / "run")
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "claims:\n  - id: mine\n    text: Uvicorn beats Hypercorn at JSON\n    baseline: fastapi-hypercorn\n"
        "    contenders: [fastapi-uvicorn]\n    checks:\n      - {test: json, ratio: {above: 1}}\n"
    )
    html = build_report(run, claims_path=mine).read_text(encoding="utf-8")
    assert "Uvicorn beats Hypercorn at JSON" in html and str(mine) in html
    mine.write_text("claims:\n  - id: broken\n")
    with pytest.raises(BenchlabError, match=r"mine\.yaml: claims\[0\] \(broken\)\.text: missing|mine\.yaml: .*text"):
        build_report(run, claims_path=mine)


def _empty(run: Path) -> None:
    for p in list(run.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _drop_column(run: Path) -> None:
    text = (run / CSV_NAME).read_text().splitlines()
    cols = text[0].split(",")
    i = cols.index("latency_p99_ms")
    (run / CSV_NAME).write_text(
        "\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != i) for line in text)
    )


def _all_failed(run: Path) -> None:
    rewrite_rows(run, lambda row: [{**row, "rps": "", "verification": "fail: body mismatch"}])


def _bad_json(run: Path) -> None:
    (run / RUN_JSON).write_text("{ not json")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_empty, "is not a benchlab run"),
        (_drop_column, "missing columns latency_p99_ms"),
        (_all_failed, "no successful steps"),
        (_bad_json, "run.json is not valid JSON"),
    ],
)
def test_bad_runs_are_one_line_errors(
    smoke_run: Path, tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    run = copy_run(smoke_run, tmp_path / "run")
    damage(run)
    with pytest.raises(BenchlabError, match=message) as err:
        build_report(run)
    assert "\n" not in str(err.value)
    assert not (run / "report.html").exists()


def test_report_columns_match_results() -> None:
    """The report reads only columns the results CSV defines (one source of truth)."""
    from benchlab.measurement import ERROR_COLUMNS, LATENCY_COLUMNS
    from benchlab.model.step import RESOURCE_COLUMNS

    used = {*LATENCY_COLUMNS, *ERROR_COLUMNS, *RESOURCE_COLUMNS}
    assert used <= set(COLUMNS)


# ---------------------------------------------------------------- the browser


@dataclass
class PageCheck:
    """What Chromium saw while loading a page."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    chart_shots: dict[str, bytes] = field(default_factory=dict)
    screenshot: bytes = b""


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4).

    A pipe needs no port and no websocket package; messages are JSON separated by NUL bytes.
    """

    def __init__(self, workdir: Path) -> None:
        assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)"
        cmd_r, self._cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        self._log = (workdir / "chromium.log").open("wb")
        argv = [
            "/bin/bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{evt_w}', CHROMIUM, *CHROMIUM_FLAGS,
            f"--user-data-dir={workdir / 'profile'}", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, pass_fds=(cmd_r, evt_w), stdout=self._log, stderr=self._log)
        os.close(cmd_r)
        os.close(evt_w)
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(evt_r,), daemon=True)
        self._reader.start()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, fd: int) -> None:
        buf = b""
        with os.fdopen(fd, "rb", buffering=0) as fh:
            while chunk := fh.read(65536):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for m in messages:
                    self._inbox.put(json.loads(m))
        self._inbox.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            msg = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("chromium did not answer in time") from None
        if msg is None:
            raise RuntimeError("chromium closed the DevTools pipe")
        return msg

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._next(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            event = self._next(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return

    def settle(self, seconds: float) -> None:
        """Collects events for a while: late console errors or requests still count."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._next(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        self._log.close()

    def check(self, url: str) -> PageCheck:
        """Loads ``url`` and reports console errors, network requests, chart geometry and screenshots."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        metrics = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics, session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired")
        self.settle(1.0)
        out = PageCheck()
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                out.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                out.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                out.console_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent" and params["request"]["url"] != url:
                out.requests.append(params["request"]["url"])
        result = self.send("Runtime.evaluate", {"expression": CHART_PROBE, "returnByValue": True}, session)
        out.charts = json.loads(result["result"]["value"])
        for chart in out.charts:
            if chart["svgW"] > 0 and chart["svgH"] > 0:
                clip = {"x": chart["x"], "y": chart["y"], "width": chart["svgW"], "height": chart["svgH"], "scale": 1}
                params = {"format": "png", "clip": clip, "captureBeyondViewport": True}
                shot = self.send("Page.captureScreenshot", params, session)
                out.chart_shots[chart["id"]] = base64.b64decode(shot["data"])
        out.screenshot = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session)["data"])
        return out


# Geometry and content of every chart as the browser laid it out.
CHART_PROBE = """JSON.stringify([...document.querySelectorAll('figure.chart')].map(f => {
  const svg = f.querySelector('svg');
  const r = svg ? svg.getBoundingClientRect() : {left: 0, top: 0, width: 0, height: 0};
  return {id: f.id, x: r.left + window.scrollX, y: r.top + window.scrollY, svgW: r.width, svgH: r.height,
          marks: svg ? svg.querySelectorAll('path, rect, use, polyline').length : 0,
          texts: svg ? [...svg.querySelectorAll('text')].map(t => t.textContent) : []};
}))"""


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium"))
    try:
        yield browser
    finally:
        browser.close()


@pytest.mark.browser
def test_report_in_chromium(report: Path, chromium: Chromium, tmp_path: Path) -> None:
    """Loads with no console errors and no network requests; every chart is drawn and visible."""
    url = report.as_uri()
    seen = chromium.check(url)
    assert seen.console_errors == []
    assert seen.requests == []
    expected = chart_ids(report.read_text(encoding="utf-8"))
    assert [c["id"] for c in seen.charts] == [f"chart-{n}" for n in expected]
    for chart in seen.charts:
        assert chart["svgW"] > 300 and chart["svgH"] > 150, chart["id"]
        assert chart["marks"] > 10, chart["id"]
        assert any("(" in t and ")" in t for t in chart["texts"]), chart["id"]  # axis units
        assert non_blank(seen.chart_shots[chart["id"]]), chart["id"]
    assert non_blank(seen.screenshot)
    (tmp_path / "report.png").write_bytes(seen.screenshot)


@pytest.mark.browser
def test_browser_check_catches_problems(chromium: Chromium, tmp_path: Path) -> None:
    """The checks above can fail: a page with a console error, a request and an empty chart."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><body><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('boom')</script>"
        "<figure id='chart-empty' class='chart'><svg width='400' height='200'></svg></figure></body></html>"
    )
    seen = chromium.check(page.as_uri())
    assert any("boom" in e for e in seen.console_errors)
    assert any(r.startswith("http://127.0.0.1:9/") for r in seen.requests)
    (chart,) = seen.charts
    assert chart["marks"] == 0 and not non_blank(seen.chart_shots["chart-empty"])


def test_a_row_cut_off_mid_write_is_left_out_with_one_warning(smoke_run: Path, tmp_path: Path) -> None:
    run = copy_run(smoke_run, tmp_path / "torn")
    path = run / "results.csv"
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # a hard kill inside the last row's write
    proc = run_benchlab("report", str(run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "cut off mid-write" in ln]) == 1, proc.stderr
    rows = list(csv.DictReader(io.StringIO((run / "summary.csv").read_text())))
    assert rows  # the report was made from the whole rows
    assert len(data.splitlines()) - 2 == len(read_rows(run))  # header and the torn row left out


# ---------------------------------------------------------------- answers and decomposition

MATRIX_COPIES = {
    "wsgi-gunicorn-gevent": ("flask-gunicorn-gevent", 1.5),
    "flask-gunicorn-gevent-idiomatic": ("flask-gunicorn-gevent", 0.6),
    "asgi-uvicorn": ("fastapi-uvicorn", 1.25),
}


def _section_rows(html: str, section: str) -> list[list[str]]:
    body = html[html.index(f'<section id="{section}">') :]
    body = body[: body.index("</section>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def test_answers_and_decomposition_from_registry_facts(smoke_run: Path, tmp_path: Path) -> None:
    """Targets added as scaled copies of the real ones: each step's ratio is the known factor."""
    run = copy_run(smoke_run, tmp_path / "run")
    with_repeats(run, 3)
    with_copies(run, MATRIX_COPIES)
    html = build_report(run).read_text()
    measured = {r["test"] for r in read_rows(run) if successful(r) and r["target"] == "flask-gunicorn-gevent"}
    rows = {(r[0], r[1], r[2], r[3]): r for r in _section_rows(html, "decomposition") if r}
    for test in measured:
        framework = rows[("framework", test, "wsgi-gunicorn-gevent", "flask-gunicorn-gevent")]
        assert framework[4] == f"{1 / 1.5:.2f}" and framework[6].startswith("-33 %"), framework
        style = rows[("style", test, "flask-gunicorn-gevent", "flask-gunicorn-gevent-idiomatic")]
        assert style[4] == "0.60" and style[6].startswith("-40 %"), style
        assert ("framework", test, "asgi-uvicorn", "fastapi-uvicorn") in rows or test not in {
            r["test"] for r in read_rows(run) if successful(r) and r["target"] == "fastapi-uvicorn"
        }
    assert all(kind != "interface" or (base, other) == ("wsgi-gunicorn-gevent", "asgi-uvicorn")
               for kind, _, base, other in rows)  # fmt: skip
    assert ("server", "json", "fastapi-uvicorn", "fastapi-hypercorn") in rows
    assert non_blank(run / CHARTS_DIR / "decomposition.png")
    answers = html[html.index('<section id="answers">') :]
    answers = re.sub(r"<[^>]+>", "", answers[: answers.index("</section>")])
    # Every test's line names its leader, level and margin; the copies scaled 1.5x lead Flask's.
    for test in measured:
        (line,) = [ln.strip() for ln in answers.splitlines() if ln.strip().startswith(f"{test}:")]
        assert re.search(r"led with [\d,]+ req/s at c=\d+.*, \d+\.\d\d× [\w-]+ \(95 % CI", line), line
    assert html.index('id="answers"') < html.index('id="summary"') < html.index('id="environment"')
