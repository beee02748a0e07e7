"""Component attribution, profile.csv math, the flame graph, the report's step annotations and the
``benchlab profile`` view, on py-spy recordings of the FastAPI targets' db test (tests/fixtures/profile:
speedscope files py-spy 0.4.3 wrote in a --profile run, cut to 150 samples per thread). No lab."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_benchlab

from benchlab.analysis.findings import Factor
from benchlab.analysis.stats import RatioEstimate
from benchlab.config.scenario import load_scenario
from benchlab.errors import BenchlabError
from benchlab.profiling.breakdown import IDLE, PROFILE_COLUMNS, append_rows, breakdown, read_profile, rows
from benchlab.profiling.components import COMPONENT_NAMES, COMPONENTS, Frame, attribute, module_of
from benchlab.profiling.flamegraph import render
from benchlab.profiling.section import step_annotation
from benchlab.profiling.speedscope import read_speedscope
from benchlab.profiling.step import profile_paths

FIXTURES = Path(__file__).parent / "fixtures" / "profile"
TFB, IDIOMATIC = "fastapi-uvicorn", "fastapi-uvicorn-idiomatic"
SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"


def fixture(target: str) -> Path:
    return FIXTURES / f"{target}.db.speedscope.json"


def f(name: str, file: str) -> Frame:
    return Frame(name, file, 1)


def test_the_table_is_the_issues() -> None:
    assert COMPONENT_NAMES == ("server", "event loop", "framework", "validation", "json", "database driver", "ORM",
                               "templates", "telemetry", "HTTP client", "app", "Python runtime", "other")  # fmt: skip
    modules = [m for mods in COMPONENTS.values() for m in mods]
    assert len(modules) == len(set(modules)), "a module in two components"


@pytest.mark.parametrize(
    ("file", "name", "stdlib"),
    [
        (f"{SITE}/starlette/routing.py", "starlette", False),
        (f"{SITE}/pydantic_core/core_schema.py", "pydantic_core", False),
        (f"{STDLIB}/json/encoder.py", "json", True),
        (f"{STDLIB}/selectors.py", "selectors", True),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/base_events.py", "asyncio", True),
        ("<frozen importlib._bootstrap>", "importlib", True),
        ("/work/services/fastapi/idiomatic.py", "", False),
    ],
)
def test_module_of_a_file(file: str, name: str, stdlib: bool) -> None:
    m = module_of(file)
    assert m is not None and (m.name, m.stdlib) == (name, stdlib)


def test_pyspy_process_frames_have_no_module() -> None:
    assert module_of("") is None


@pytest.mark.parametrize(
    ("stack", "component"),
    [
        # the innermost frame outside the standard library decides
        ([f("run", f"{SITE}/uvicorn/server.py"), f("view", "/srv/app.py"), f("dumps", f"{SITE}/orjson/x.py")], "json"),
        ([f("run", f"{SITE}/uvicorn/server.py"), f("view", "/srv/app.py"), f("send", f"{STDLIB}/socket.py")], "app"),
        # json, asyncio and selectors are named in the table although they are the standard library
        ([f("view", "/srv/app.py"), f("dumps", f"{STDLIB}/json/__init__.py"), f("encode", f"{STDLIB}/json/encoder.py")],
         "json"),
        ([f("run", f"{SITE}/uvicorn/server.py"), f("_run_once", f"{STDLIB}/asyncio/base_events.py")], "event loop"),
        # no claimable frame at all: the innermost frame
        ([f("_bootstrap", f"{STDLIB}/threading.py"), f("wait", f"{STDLIB}/threading.py")], "Python runtime"),
        ([f("h", f"{SITE}/sqlalchemy/orm/session.py"), f("g", f"{SITE}/greenlet/__init__.py")], "event loop"),
        ([f("x", f"{SITE}/zope/event/__init__.py")], "other"),
        # the target kit and whatever it calls are the service's own
        ([f("info", "/tmp/kit/target_kit.py"), f("smaps", f"{SITE}/psutil/_pslinux.py")], "app"),
        ([f('process 1:"python serve.py"', ""), f("run", f"{SITE}/hypercorn/run.py")], "server"),
    ],
)
def test_attribution(stack: list[Frame], component: str) -> None:
    assert attribute(stack) == component


def test_breakdown_counts_every_sample_once() -> None:
    recording = read_speedscope(fixture(TFB))
    b = breakdown(recording, ticks=500)
    frameless = sum(1 for stack, _ in recording.samples() if not any(fr.file for fr in stack))
    assert b.busy == recording.total == sum(b.functions.values()) + frameless
    assert math.isclose(sum(b.share(c) for c in COMPONENT_NAMES), 1.0)
    assert b.idle == 500 * len(recording.threads) - recording.total


def test_profile_rows_add_up_to_the_measured_cpu_per_request() -> None:
    b = breakdown(read_speedscope(fixture(IDIOMATIC)), ticks=500)
    cpu_seconds, requests = 3.2, 4000  # what the profiled step's row says
    out = rows(IDIOMATIC, "db", b, cpu_seconds, requests)
    assert [r["component"] for r in out] == [*COMPONENT_NAMES, IDLE]
    assert set(out[0]) == set(PROFILE_COLUMNS)
    total = sum(r["cpu_us_per_request"] for r in out[:-1])
    assert total == pytest.approx(cpu_seconds * 1e6 / requests, rel=1e-3)
    for r in out[:-1]:
        assert r["cpu_us_per_request"] == pytest.approx(cpu_seconds * 1e6 * r["samples"] / b.busy / requests, abs=0.01)
    assert out[-1]["samples"] == b.idle and out[-1]["share"] is None


def test_no_cpu_figure_without_a_measurement() -> None:
    b = breakdown(read_speedscope(fixture(TFB)))
    assert all(r["cpu_us_per_request"] is None for r in rows(TFB, "db", b, None, 100))
    assert all(r["cpu_us_per_request"] is None for r in rows(TFB, "db", b, 1.0, 0))


def test_the_idiomatic_db_profile_lands_in_named_components() -> None:
    """The style step's extra CPU goes to the ORM, validation and the rest, not to ``other``."""
    tfb, idiomatic = (breakdown(read_speedscope(fixture(t))) for t in (TFB, IDIOMATIC))
    assert idiomatic.share("other") <= 0.05
    assert idiomatic.components["ORM"] > 0 and tfb.components["ORM"] == 0
    assert idiomatic.components["database driver"] > 0 and tfb.components["database driver"] > 0


def test_profile_csv_round_trip_and_replacement(tmp_path: Path) -> None:
    b = breakdown(read_speedscope(fixture(TFB)))
    append_rows(tmp_path, rows(TFB, "db", b, 1.0, 1000))
    append_rows(tmp_path, rows(IDIOMATIC, "db", b, 1.0, 1000))
    append_rows(tmp_path, rows(TFB, "db", b, 2.0, 1000))  # a resumed run profiles it again
    got = read_profile(tmp_path)
    assert len(got) == 2 * (len(COMPONENT_NAMES) + 1)
    mine = [r for r in got if r["target"] == TFB and r["component"] != IDLE]
    assert sum(float(r["cpu_us_per_request"]) for r in mine) == pytest.approx(2000, rel=1e-3)


def test_a_run_without_profile_csv_is_told_so(tmp_path: Path) -> None:
    with pytest.raises(BenchlabError, match="--profile"):
        read_profile(tmp_path)


def test_flame_graph_is_an_svg_with_every_frame_named() -> None:
    b = breakdown(read_speedscope(fixture(IDIOMATIC)))
    svg = render(b.stacks, "db", b.frame_component)
    root = ET.fromstring(svg)
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert titles[0].startswith("all: ") and f"{b.busy:,} samples" in titles[0]
    assert any("sqlalchemy/" in t for t in titles)


def test_flame_graph_of_a_garbled_frame_name_still_parses() -> None:
    """py-spy can read a name mid-write; CI once got a control byte that made the SVG unreadable."""
    stacks = Counter({("main (app.py:1)", "\x00\x1bbad <&> \udcff (x.py:2)"): 3})
    root = ET.fromstring(render(stacks, "garbled \x07"))
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("\ufffd\ufffdbad <&> \ufffd") for t in titles)


def _factor(base: str, other: str) -> Factor:
    return Factor("style", "db", base, other, RatioEstimate(0.4, 0.3, 0.5, 0.01, "2/2", "pooled"))


def test_step_annotation_names_the_biggest_changes() -> None:
    cpu = {(TFB, "db"): {"server": 100.0, "ORM": 0.0, "validation": 5.0, "telemetry": 0.0},
           (IDIOMATIC, "db"): {"server": 110.0, "ORM": 150.0, "validation": 40.0, "telemetry": 20.0}}  # fmt: skip
    text = step_annotation(_factor(TFB, IDIOMATIC), cpu)
    assert text == f"style, db: +215 µs/request ({TFB} → {IDIOMATIC}): ORM +150, validation +35, telemetry +20"
    assert step_annotation(_factor(TFB, "unprofiled"), cpu) is None


def test_scenario_profile_key(tmp_path: Path) -> None:
    base = "duration_s: 1\ntests:\n  json:\n    concurrency: [1]\n"
    (tmp_path / "on.yaml").write_text(base + "profile: true\n")
    (tmp_path / "bad.yaml").write_text(base + "profile: yes please\n")
    on = load_scenario(str(tmp_path / "on.yaml"))
    assert on.profile and load_scenario(str(tmp_path / "on.yaml")).to_dict()["profile"] is True
    with pytest.raises(BenchlabError, match="profile"):
        load_scenario(str(tmp_path / "bad.yaml"))


@pytest.fixture
def profiled_run(tmp_path: Path) -> Path:
    """A run directory holding the two recordings and their profile.csv rows, as --profile leaves them."""
    for target, cpu in ((TFB, 1.5), (IDIOMATIC, 3.0)):
        speedscope, _ = profile_paths(tmp_path, target, "db")
        speedscope.parent.mkdir(parents=True)
        speedscope.write_bytes(fixture(target).read_bytes())
        append_rows(tmp_path, rows(target, "db", breakdown(read_speedscope(speedscope)), cpu, 3000))
    return tmp_path


def test_profile_command_diffs_components_then_functions(profiled_run: Path) -> None:
    proc = run_benchlab("profile", str(profiled_run), "--target", IDIOMATIC, "--vs", TFB, "--test", "db",
                        env={"COLUMNS": "200"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    components, _, functions = proc.stdout.partition("top 15 functions")
    assert "ORM" in components and "total" in components
    assert "+500.0" in components  # 3.0 s vs 1.5 s over 3000 requests
    body = [ln for ln in functions.splitlines() if "│" in ln and "(" in ln]
    assert 0 < len(body) <= 15
    assert "PreparedStatement" in functions or "sqlalchemy" in functions


def test_profile_command_refuses_an_unprofiled_target(profiled_run: Path) -> None:
    proc = run_benchlab("profile", str(profiled_run), "--target", "flask-granian", "--vs", TFB, "--test", "db")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no db profile of flask-granian" in proc.stderr
