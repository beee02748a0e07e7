"""Every chart shows its text in full, with every registered target and their longest names.

From recorded results, no lab: tests/fixtures/every-target (a native run of every registered
target, json and db at 32 connections, 2 repeats) and tests/fixtures/upstream-model (the
`upstream-model` scenario: every target's upstream at 1 and 256 connections, each step carrying
a verification warning, as on a busy machine). Once as matplotlib lays each figure out for its
PNG, and once as headless Chromium shows report.html at 1,400 px. A label of the
decomposition chart was cut there ("erver: fastapi-uvicorn → fastapi-hypercorn") while its PNG
was whole: the SVG kept the layout solved for the PNG's dpi, where hinted text is narrower.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from benchlab.analysis.analyse import analyse
from benchlab.analysis.run import load_run
from benchlab.model.codec import CSV_NAME
from benchlab.report.build import build_report
from benchlab.report.charts import draw_charts
from benchlab.report.plotting import PNG_DPI, add_footer, context_line
from benchlab.rundir import RUN_JSON
from benchlab.targets import load_targets

FIXTURES = Path(__file__).with_name("fixtures")
CHROMIUM = "/usr/bin/chromium"
REPORT_WIDTH_PX = 1400
SLACK_PX = 0.5  # rounding of a text's box, not a cut letter (a letter at 8 pt is 4-6 px)
# Runs in the page Chromium shows: every chart's text boxes against its SVG's box (an inline SVG
# clips what lies beyond it), the SVG's against its figure's, and the page's width.
MEASURE = """<script>
const charts = [...document.querySelectorAll('figure.chart')].map(f => {
  const svg = f.querySelector('svg'), box = svg.getBoundingClientRect(), fig = f.getBoundingClientRect();
  const texts = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0)
    .map(([s, r]) => [s, box.left - r.left, r.right - box.right, box.top - r.top, r.bottom - box.bottom]);
  return {id: f.id, svg: [box.left, box.right, box.width], figure: [fig.left, fig.right], texts};
});
document.body.setAttribute('data-measured', JSON.stringify(
  {charts, page: document.documentElement.scrollWidth, view: window.innerWidth}));
</script>"""


@pytest.fixture(scope="module", params=["every-target", "upstream-model"])
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(request.param) / "run"
    out.mkdir()
    for name in (CSV_NAME, RUN_JSON, "scenario.yaml"):
        shutil.copy(FIXTURES / request.param / name, out / name)
    return out


def test_fixture_holds_every_registered_target(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert set(run.targets) == {t.name for t in load_targets(["all"])}
    assert len(run.targets) == 12


def test_every_chart_fits_its_text_at_the_png_dpi(run_dir: Path) -> None:
    """matplotlib's own view: laid out as save() lays out each PNG, nothing drawn lies beyond the
    figure (constrained layout that gave up on long names would leave labels cut), and the layout
    never gives up (it warns, and a user running `benchlab report` saw the warning)."""
    run = load_run(run_dir)
    footer = context_line(run.meta)
    for drawn in [d for section in draw_charts(analyse(run)).values() for d in section]:
        fig = drawn.fig
        add_footer(fig, footer)
        fig.set_dpi(PNG_DPI)
        canvas = FigureCanvasAgg(fig)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            canvas.draw()
        drawn_box = fig.get_tightbbox(canvas.get_renderer())  # inches: every artist drawn
        width, height = fig.get_size_inches()
        slack = SLACK_PX / PNG_DPI
        assert drawn_box.x0 >= -slack and drawn_box.y0 >= -slack, (drawn.name, drawn_box)
        assert drawn_box.x1 <= width + slack and drawn_box.y1 <= height + slack, (drawn.name, drawn_box, width)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_report_shows_every_chart_label_in_full_at_1400_px(run_dir: Path, tmp_path: Path) -> None:
    report = build_report(run_dir)
    page = tmp_path / "measured.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--hide-scrollbars", f"--window-size={REPORT_WIDTH_PX},900", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'data-measured="([^"]*)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    assert measured["view"] == REPORT_WIDTH_PX
    assert measured["page"] <= REPORT_WIDTH_PX, "the page scrolls sideways"
    ids = [chart["id"] for chart in measured["charts"]]
    assert len(ids) >= 3, ids
    if run_dir.parent.name.startswith("every-target"):
        assert "chart-decomposition" in ids and len(ids) >= 6, ids
    cut = []
    for chart in measured["charts"]:
        left, right, width = chart["svg"]
        assert width > 300, chart["id"]
        assert chart["figure"][0] - SLACK_PX <= left and right <= chart["figure"][1] + SLACK_PX, chart["id"]
        cut += [(chart["id"], text, round(max(over), 1)) for text, *over in chart["texts"] if max(over) > SLACK_PX]
    assert not cut, f"text beyond its chart's edge (px): {cut}"


def test_a_sweep_of_connections_at_one_wait_is_charted_against_connections() -> None:
    """The upstream test's own parameter is the wait; a run that held it at 20 ms and swept
    connections charts throughput against connections, and names the wait as a wait."""
    run = load_run(FIXTURES / "upstream-model")
    drawn = {d.name: d for section in draw_charts(analyse(run)).values() for d in section}
    (ax,) = drawn["scaling-upstream"].fig.axes
    assert ax.get_xlabel().startswith("concurrent connections")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "256"]
    notes = [t.get_text() for t in drawn["peak-upstream"].fig.axes[0].texts]
    flagged = [n for n in notes if "⚠" in n]
    assert flagged and all(n.endswith("\n⚠ warning") for n in flagged), notes
