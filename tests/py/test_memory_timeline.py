"""Memory over time: the process's RSS and the traced heap sampled on an interval into the
profile (`apiprof run --memory-interval`, `Profiler(memory_interval=)`), the JSON export's
"memory_timeline", phases, and the chart of the HTML report."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import apiprof
import pytest
from apiprof import _core
from cdp import Browser

APIPROF = Path(sys.executable).with_name("apiprof")
MIB = 1 << 20

# Keeps 50 MiB, allocated in ten steps; the list outlives the script's globals (stashed
# on sys), so the last point, taken when the run stops, still holds it.
GROW = """
import sys, time
keep = []
sys.apiprof_test_keep = keep
for _ in range(10):
    keep.append(bytearray(5 << 20))
    time.sleep(0.02)
"""


def timeline(path: Path) -> list[dict]:
    return json.loads(_core.load(str(path)).json())["memory_timeline"]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grow")
    script = tmp / "grow.py"
    script.write_text(GROW)
    out = tmp / "grow.apiprof"
    r = subprocess.run([str(APIPROF), "run", "-q", "--memory", "full", "--memory-interval",
                        "0.01", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tmp, out


def test_run_memory_records_rss_and_heap_growing_in_steps(grown):
    _, out = grown
    points = timeline(out)
    assert len(points) >= 2
    times = [p["t_ns"] for p in points]
    assert times == sorted(times)
    first, last = points[0], points[-1]
    assert last["rss_bytes"] - first["rss_bytes"] >= 40 * MIB
    # full mode: the heap is every block allocated since the start and still alive
    assert last["heap_bytes"] - first["heap_bytes"] >= 50 * MIB
    for a, b in itertools.pairwise(points):   # monotone but for small frees
        assert b["heap_bytes"] >= a["heap_bytes"] - MIB
        assert b["rss_bytes"] >= a["rss_bytes"] - 2 * MIB
    assert all("phase" not in p for p in points)
    assert _core.load(str(out)).meta["memory_interval_ns"] == "10000000"


def test_the_html_report_plots_memory_over_time(grown, tmp_path):
    _, out = grown
    html = tmp_path / "grow.html"
    r = subprocess.run([str(APIPROF), "report", str(out), "-o", str(html)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with Browser(tmp_path / "chromium") as browser:
        view = browser.open(html.as_uri())
        view.wait_for("document.body.dataset.ready === '1'")
        assert view.errors == [] and view.eval("window.apiprofErrors.length") == 0
        assert view.eval("document.querySelectorAll('#memtl svg polyline').length") == 2
        assert view.eval("document.querySelectorAll('#memtl svg polyline.mt-rss').length") == 1
        growth = view.eval("Array.from(document.querySelectorAll('#memtl [data-growth]'))"
                           ".map(function (e) { return e.dataset.growth; }).join()")
        assert growth == "rss,heap"
        # drawn: the RSS line has a point per sample and spans the plot
        assert view.eval("document.querySelector('#memtl polyline.mt-rss')"
                         ".getBBox().width") > 500
        text = view.eval("document.getElementById('overview').innerText")
        assert "Memory over time" in text and "traced heap (peak" in text
        view.eval("document.getElementById('memtl').scrollIntoView()")
        view.screenshot(tmp_path / "memory-over-time.png")


def test_points_carry_the_phase_and_one_is_taken_at_each_switch(tmp_path):
    p = apiprof.Profiler(memory="full", memory_interval=30)
    keep = []
    with p:
        p.set_phase("warm")
        keep.append(bytearray(4 * MIB))
        p.set_phase("load")
        keep.append(bytearray(8 * MIB))
        p.set_phase("<cool&>")
    path = tmp_path / "phases.apiprof"
    p.save(path)
    points = timeline(path)
    # start (no phase yet), one per switch, stop: the interval is far longer than the run
    assert [pt.get("phase") for pt in points] == [None, "warm", "load", "<cool&>", "<cool&>"]
    heap = [pt["heap_bytes"] for pt in points]
    assert heap[2] - heap[1] >= 4 * MIB and heap[3] - heap[2] >= 8 * MIB
    html = tmp_path / "phases.html"
    r = subprocess.run([str(APIPROF), "report", str(path), "-o", str(html)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    assert "&lt;cool&amp;&gt;" in page   # the band's name in the chart, escaped
    assert "<cool&>" not in page
    del keep


def test_off_unless_asked_and_without_memory_rss_alone(tmp_path):
    p = apiprof.Profiler()
    with p:
        pass
    assert json.loads(p.profile.json())["memory_timeline"] == []
    p = apiprof.Profiler(memory="sampled", memory_interval=0)
    with p:
        pass
    assert json.loads(p.profile.json())["memory_timeline"] == []
    script = tmp_path / "noop.py"
    script.write_text("x = 1\n")
    out = tmp_path / "noop.apiprof"
    r = subprocess.run([str(APIPROF), "run", "-q", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    points = timeline(out)   # apiprof run records RSS always; the heap needs --memory
    assert len(points) >= 2 and all(pt["heap_bytes"] is None for pt in points)
    assert all(pt["rss_bytes"] > MIB for pt in points)


def test_memory_interval_errors():
    with pytest.raises(ValueError, match="memory_interval"):
        apiprof.Profiler(memory="full", memory_interval=-1)
    with pytest.raises(ValueError, match="memory_interval"):
        apiprof.Profiler(memory_interval=1e-6)
    r = subprocess.run([str(APIPROF), "run", "--memory-interval", "-2", "-m", "json.tool"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--memory-interval" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
