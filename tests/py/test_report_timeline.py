"""The HTML report's timeline in headless Chromium, on a real `apiprof run --timeline` of
uvicorn serving an app that blocks its event loop in an async route and contends on a
lock in a sync one: one lane per thread, the stalls on their own track with their call
paths, the lock waits in the lock's colour; and the one-line hint without a timeline."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from cdp import Browser
from conftest import free_port
from helpers import REPO_ROOT, serve_profiled
from profiles import fr, write
from test_stalls import concurrently, marked_line

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
STALL_APP = APPS / "stall_app.py"
ARTIFACTS = REPO_ROOT / ".artifacts" / "report"
READY = "document.body && document.body.dataset.ready === '1'"


def apiprof(*args: str) -> None:
    r = subprocess.run([str(APIPROF), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """stall_app under `apiprof run --timeline` (lock waits are timed by default), on
    asyncio's loop (whose selector the tracer sees: uvloop's is compiled): a warm-up,
    then three /blocking among awaiting and fast requests, and six /locked at once. The
    HTML report, the JSON export and the Chrome trace of it."""
    d = tmp_path_factory.mktemp("timeline")
    out, port = d / "stall.apiprof", free_port()

    def drive(client: httpx.Client) -> None:
        concurrently(client, ["/fast", "/awaiting", "/health"] * 2)
        concurrently(client, ["/blocking", "/awaiting", "/fast", "/fast"] * 3)
        concurrently(client, ["/locked"] * 6, workers=6)

    serve_profiled([str(APIPROF), "run", "-q", "--timeline", "-o", str(out), "-m", "uvicorn",
                    "stall_app:app", "--host", "127.0.0.1", "--port", str(port),
                    "--loop", "asyncio", "--log-level", "warning"],
                   APPS, {}, port, d / "server.log", drive)
    apiprof("report", str(out), "-o", str(d / "stall.html"))
    apiprof("report", str(out), "--format", "json", "-o", str(d / "stall.json"))
    apiprof("report", str(out), "--format", "chrome", "-o", str(d / "stall.trace.json"))
    return {"html": d / "stall.html", "doc": json.loads((d / "stall.json").read_text()),
            "trace": json.loads((d / "stall.trace.json").read_text()), "profile": out}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with Browser(tmp_path_factory.mktemp("chromium"), width=1400, height=1000) as b:
        yield b


def threads_with_events(path: Path) -> set[str]:
    """The thread ids of the trees that recorded work, from the profile itself (its
    trees' labels: a thread's own tree and those of the routes it served share it)."""
    prof = _core.load(str(path))
    return {t["labels"]["thread_id"] for i, t in enumerate(prof.trees())
            if "thread_id" in t["labels"] and any(n.get("total_ns") for n in prof.nodes(i))}


def centre(page, selector: str, index: int = 0) -> tuple[float, float]:
    r = page.eval(f"""(() => {{ const r = document.querySelectorAll({json.dumps(selector)})
        [{index}].getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
    return r[0], r[1]


def test_timeline_of_a_uvicorn_run(browser, recorded):
    doc, trace = recorded["doc"], recorded["trace"]
    page = browser.open(recorded["html"].as_uri())
    page.wait_for(READY)
    assert "open the Timeline" in page.eval("document.getElementById('overview').textContent")
    page.eval("document.getElementById('to-timeline').click()")
    assert page.eval("window.apiprof.state.view") == "timeline"
    assert page.eval("document.getElementById('view-timeline').classList.contains('on')")

    # One lane per thread: the loop's routes are drawn on the loop thread's lane.
    tl = page.eval("window.apiprof.timeline()")
    threads = threads_with_events(recorded["profile"])
    # The Chrome trace has the same tracks: a thread each, then the stalls; its lock waits
    # say so in their category, on the pool's threads, for /locked
    tracks = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert len(tracks) == len(threads) + 1 and tracks[len(tracks)] == "event-loop stalls"
    locks = [e for e in trace["traceEvents"] if "<lock wait>" in e.get("name", "")]
    assert locks and all(e["cat"] == "lock" and e["args"]["route"] == "GET /locked"
                         and tracks[e["tid"]].startswith("AnyIO worker thread") for e in locks)
    assert len(tl["lanes"]) == len(threads) and len(threads) >= 3   # loop and pool workers
    assert page.eval("document.querySelectorAll('#tl-svg text.lane').length") == len(threads)
    assert tl["lanes"][0] == "MainThread (event loop)"
    # The ring held more spans than the page embeds: the page says which it shows.
    note = page.eval("document.getElementById('tl-note').textContent")
    assert re.search(r"Showing the 20,000 longest of [\d,]+ spans", note), note

    # The stalls: one rectangle each on their own track, in the stalls' colour.
    stalls = doc["stalls"]
    assert len(stalls) >= 3
    assert page.eval("document.querySelectorAll('#tl-svg .tl-stall').length") == len(stalls)
    blocking = [i for i, s in enumerate(stalls) if s["route"] == "GET /blocking"]
    assert len(blocking) == 3
    # A real click on one shows its call path, outermost first, the culprit's line marked.
    line = marked_line(STALL_APP, "the planted blocking call")
    page.click(*centre(page, "#tl-svg .tl-stall", blocking[1]))
    page.wait_for("document.querySelectorAll('#tl-stall li').length > 0")
    panel = page.eval("document.getElementById('tl-stall').textContent")
    assert "GET /blocking" in panel and f"The time went to line {line} of {STALL_APP}" in panel
    quoted = page.eval("document.querySelector('#tl-stall pre.tl-line').textContent")
    assert quoted == f"{line}  " + STALL_APP.read_text().splitlines()[line - 1]
    path = page.eval("Array.from(document.querySelectorAll('#tl-stall li'))"
                     ".map(l => l.textContent)")
    names = [p.split(" ")[0] for p in path]
    assert names[-4:] == ["blocking", "prepare_report", "pause_loop", "time.sleep"]
    culprit = page.eval("document.querySelector('#tl-stall li.culprit').textContent")
    assert culprit.startswith("pause_loop ") and f"stall_app.py:{line}" in culprit
    assert page.eval("document.querySelectorAll('#tl-svg .tl-stall.sel').length") == 1

    # Requests: the outermost spans of the route trees, by route.
    routes = collections.Counter(page.eval(
        "Array.from(document.querySelectorAll('#tl-svg .tl-req'))"
        ".map(r => window.apiprof.timelineRoute(+r.getAttribute('data-i')))"))
    assert routes["GET /blocking"] >= 3 and routes["GET /locked"] >= 6

    # Lock waits (`with _LOCK:` in the sync route) are drawn in the lock's colour, at the
    # acquiring line, on the pool threads.
    lock_line = marked_line(STALL_APP, "the contended acquisition")
    key = page.eval("getComputedStyle(document.querySelector('#tl-legend [data-kind=lock]'))"
                    ".backgroundColor")
    waits = page.eval("""Array.from(document.querySelectorAll('#tl-svg rect[data-kind=lock]'))
        .map(r => [getComputedStyle(r).fill, +r.getAttribute('width'),
                   +r.getAttribute('data-i')])""")
    assert waits and all(w[0] == key for w in waits), (key, waits)
    widest = max(waits, key=lambda w: w[1])
    assert widest[1] > 2
    page.eval(f"""document.querySelector('#tl-svg rect[data-i="{widest[2]}"]')
        .dispatchEvent(new MouseEvent('mousemove',
                                      {{bubbles: true, clientX: 300, clientY: 300}}))""")
    tip = page.eval("document.getElementById('tip').textContent")
    assert tip.startswith("<lock wait>") and f"stall_app.py:{lock_line}" in tip
    assert "waiting: lock" in tip
    lane = page.eval(f"window.apiprof.timelineLane({widest[2]})")
    assert lane.startswith("AnyIO worker thread")

    # Zoom and pan: the buttons halve and restore the range shown.
    whole = tl["v1"] - tl["v0"]
    page.eval("document.getElementById('tl-in').click()")
    zoomed = page.eval("window.apiprof.timeline()")
    assert abs((zoomed["v1"] - zoomed["v0"]) - whole / 2) < 1e3
    page.eval("document.getElementById('tl-reset').click()")
    assert page.eval("window.apiprof.timeline()")["v1"] == tl["end"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(ARTIFACTS / "timeline.png")
    assert page.errors == [] and page.eval("window.apiprofErrors") == []


def test_profile_without_a_timeline_says_how_to_get_one(browser, tmp_path):
    src = write({"trees": [{"labels": {"thread": "MainThread"},
                            "nodes": [([fr("main")], {"self_ns": 1000})]}]}, tmp_path / "p.apiprof")
    out = tmp_path / "p.html"
    apiprof("report", str(src), "-o", str(out))
    page = browser.open(out.as_uri() + "#view=timeline")
    page.wait_for(READY)
    note = page.eval("document.getElementById('tl-note').textContent")
    assert "no timeline" in note and "apiprof run --timeline" in note
    assert page.eval("document.getElementById('tl-main').hidden") is True
    assert "open the Timeline" not in page.eval("document.getElementById('overview').textContent")
    assert page.errors == []


def test_a_ring_that_overwrote_spans_veils_the_part_it_lost(browser, tmp_path):
    """A ring of 10 spans over 100 calls kept the last nine calls and their caller: before
    the end of the oldest kept span, the calls that ended are gone and only the caller
    (still open then) is drawn, so that part is veiled and the note says until when;
    the run after it is drawn as recorded."""
    from apiprof import Profiler

    def leaf() -> int:
        return sum(range(2000))

    def outer() -> None:
        for _ in range(100):
            leaf()

    p = Profiler(builtins=False, timeline=10)
    with p:
        outer()
    path, out = tmp_path / "t.apiprof", tmp_path / "t.html"
    p.save(path)
    apiprof("report", str(path), "-o", str(out))
    page = browser.open(out.as_uri() + "#view=timeline")
    page.wait_for(READY)
    tl = page.eval("window.apiprof.timeline()")
    assert len(tl["lanes"]) == 1 and page.errors == []
    whole = page.eval("(function () { var h = document.documentElement.innerHTML;"
                      " var m = /\"whole_from\":(\\d+)/.exec(h); return m ? +m[1] : -1; })()")
    # the end of the oldest span kept, from the run's first start: the Chrome trace's
    # figures (microseconds to the nanosecond)
    apiprof("report", str(path), "--format", "chrome", "-o", str(tmp_path / "t.trace.json"))
    spans = [e for e in json.loads((tmp_path / "t.trace.json").read_text())["traceEvents"]
             if e["ph"] == "X"]
    first = min(round(e["ts"] * 1000) for e in spans)
    assert whole == min(round((e["ts"] + e["dur"]) * 1000) for e in spans) - first > 0
    assert page.eval("document.querySelectorAll('#tl-svg .tl-lost').length") == 1
    assert "is veiled" in page.eval("document.getElementById('tl-note').textContent")
