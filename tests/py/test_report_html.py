"""The HTML report and the SVG flame graph in headless Chromium (Debian's chromium, driven
over the DevTools protocol): no console errors, the flame graph renders, a real click
zooms, search highlights, the views agree with the C function table. Screenshots are kept
in .artifacts/report/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cdp import Browser
from helpers import REPO_ROOT
from profiles import SHOP_ROUTE_ITEMS_WALL, SHOP_TOTALS, big_spec, shop_spec, write

APIPROF = Path(sys.executable).with_name("apiprof")
ARTIFACTS = REPO_ROOT / ".artifacts" / "report"
READY = "document.body && document.body.dataset.ready === '1'"


def report(src: Path, out: Path, *args: str) -> Path:
    r = subprocess.run([str(APIPROF), "report", str(src), "-o", str(out), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shop")
    return write(shop_spec(d / "tpl.py"), d / "shop.apiprof")


def pixel(page, x: float, y: float) -> list[int]:
    return page.eval(f"""(() => {{ const c = document.getElementById('flame'),
        r = c.getBoundingClientRect(), d = window.devicePixelRatio || 1;
        return Array.from(c.getContext('2d').getImageData(Math.round(({x} - r.left) * d),
        Math.round(({y} - r.top) * d), 1, 1).data); }})()""")


def test_html_report_views(browser, shop, tmp_path):
    html = report(shop, tmp_path / "shop.html")
    text = html.read_text()
    assert "<script src" not in text and "http://" not in text.replace(
        "http://www.w3.org/2000/svg", "")   # self-contained, nothing fetched
    page = browser.open(html.as_uri())
    page.wait_for(READY)
    assert page.errors == [] and page.eval("window.apiprofErrors") == []
    assert page.eval("window.apiprof.state.view") == "overview"   # opens on the findings
    page.eval("window.apiprof.show('flame')")
    state = page.eval("window.apiprof.state")
    assert state["drawn"] == 14   # the 13 merged nodes and the root
    assert page.eval("window.apiprof.view().total") == SHOP_TOTALS["wall"]
    page.screenshot(ARTIFACTS / "flame.png")

    # A real click on list_items zooms: it then spans the whole canvas.
    before = page.eval("window.apiprof.rectOf('list_items')")
    assert 0 < before["width"] < 1000
    page.click(before["x"], before["y"])
    after = page.eval("window.apiprof.rectOf('list_items')")
    assert page.eval("window.apiprof.state.zoom") == before["node"]
    width = page.eval("document.getElementById('flame').clientWidth")
    assert after["width"] == pytest.approx(width)
    assert page.eval("window.apiprof.rectOf('get_item')") is None   # outside the zoom
    page.screenshot(ARTIFACTS / "flame-zoomed.png")
    page.click(*(lambda r: (r["x"], r["y"]))(page.eval(
        "(() => { const r = document.getElementById('reset-zoom').getBoundingClientRect();"
        " return {x: r.left + 5, y: r.top + 5}; })()")))
    assert page.eval("window.apiprof.state.zoom") == 0

    # Typing a search highlights the matching frames (magenta pixels).
    page.click(*(lambda r: (r["x"], r["y"]))(page.eval(
        "(() => { const r = document.getElementById('search').getBoundingClientRect();"
        " return {x: r.left + 5, y: r.top + 5}; })()")))
    page.type_text("que.y")
    page.wait_for("window.apiprof.state.search === 'que.y'")
    assert page.eval("window.apiprof.state.matches") == 2
    assert "51.0% of wall" in page.eval("document.getElementById('matched').textContent")
    q = page.eval("window.apiprof.rectOf('query')")
    assert pixel(page, q["x"], q["y"])[:3] == [220, 0, 220]
    lst = page.eval("window.apiprof.rectOf('list_items')")
    assert pixel(page, lst["x"] + lst["width"] / 3, lst["y"])[:3] != [220, 0, 220]
    page.screenshot(ARTIFACTS / "flame-search.png")
    page.eval("window.apiprof.search('')")

    # Function table computed by the page == the C function table (JSON export).
    c_rows = {f["qualname"]: f for f in json.loads(subprocess.run(
        [str(APIPROF), "report", str(shop), "-f", "json"], capture_output=True, text=True,
        check=True).stdout)["functions"]}
    js_rows = {r["name"]: r for r in page.eval("window.apiprof.functions()")}
    assert js_rows.keys() == c_rows.keys()
    for name, r in js_rows.items():
        c = c_rows[name]
        assert (r["calls"], r["prim"], r["self"], r["total"], r["await"]) == (
            c["calls"], c["primitive_calls"], c["self_ns"], c["total_ns"], c["await_ns"]), name
        assert (r["callers"], r["callees"]) == (len(c["callers"]), len(c["callees"])), name

    # Function table view: sortable, callers and callees of the clicked row.
    page.eval("window.apiprof.show('funcs')")
    first = "document.querySelector('#funcs tbody tr td').textContent"
    assert page.eval(first) == "<module>"
    page.eval("document.querySelector('#funcs th[data-col=self]').click()")
    assert page.eval(first) == "query"
    page.eval("document.querySelector('#funcs tbody tr').click()")
    detail = page.eval("document.getElementById('func-detail').textContent")
    assert "callers of query" in detail and "list_items40" in detail.replace(" ", "")
    page.screenshot(ARTIFACTS / "functions.png")

    # Call tree: expand / collapse.
    page.eval("window.apiprof.show('tree')")
    rows = "document.querySelectorAll('#tree .tn[data-node]').length"
    assert page.eval(rows) == 8   # the hot path is open: root, <module>, run, its 2, list's 3
    page.eval("""Array.from(document.querySelectorAll('#tree .tn[data-node]')).find(d =>
        d.textContent.includes('get_item')).querySelector('.tg').click()""")
    assert page.eval(rows) == 11   # get_item's query, time.sleep, fib
    page.eval("document.querySelector('#tree .tn[data-node=\"0\"] .tg').click()")
    assert page.eval(rows) == 1
    page.screenshot(ARTIFACTS / "tree.png")

    # Call graph: share of time and calls on the edges.
    page.eval("window.apiprof.show('graph')")
    graph = "document.getElementById('graph').textContent"
    assert "46.4% \u00b7 40 calls" in page.eval(graph)   # focus: query, from the table
    assert "4.6% \u00b7 2 calls" in page.eval(graph)     # its other caller, get_item
    page.eval("""Array.from(document.querySelectorAll('#graph-path a')).find(a =>
        a.textContent === 'list_items').click()""")
    assert "22.0% \u00b7 4 calls" in page.eval(graph)    # list_items -> render
    page.screenshot(ARTIFACTS / "callgraph.png")

    # Source view: the lines of render with their time, read from the real file.
    page.eval("window.apiprof.show('source')")
    src = page.eval("document.getElementById('source').textContent")
    assert "out = [r for r in rows]" in src and "30.0 us" in src
    page.screenshot(ARTIFACTS / "source.png")

    # Filters and metric switch.
    page.eval("window.apiprof.show('flame')")
    page.eval("(() => { const s = document.getElementById('filter-route'); s.value = 'GET /items';"
              " s.dispatchEvent(new Event('change')); })()")
    assert page.eval("window.apiprof.view().total") == SHOP_ROUTE_ITEMS_WALL
    # The filtered table is the writer's (the C table of the selected trees), not the page's.
    c_route = {f["qualname"]: f for f in json.loads(subprocess.run(
        [str(APIPROF), "report", str(shop), "-f", "json", "--route", "GET /items"],
        capture_output=True, text=True, check=True).stdout)["functions"]}
    js_route = {r["name"]: r for r in page.eval("window.apiprof.functions()")}
    assert js_route.keys() == c_route.keys() and js_route.keys() < c_rows.keys()
    for name, r in js_route.items():
        c = c_route[name]
        assert (r["calls"], r["prim"], r["self"], r["total"]) == (
            c["calls"], c["primitive_calls"], c["self_ns"], c["total_ns"]), name
    page.eval("(() => { const s = document.getElementById('filter-route'); s.value = '';"
              " s.dispatchEvent(new Event('change')); const m = document.getElementById('metric');"
              " m.value = 'cpu'; m.dispatchEvent(new Event('change')); })()")
    assert page.eval("window.apiprof.view().total") == SHOP_TOTALS["cpu"]
    # The table follows the metric: self is the CPU time of the function itself.
    js_cpu = {r["name"]: r for r in page.eval("window.apiprof.functions()")}
    assert {n: r["self"] for n, r in js_cpu.items()} == {
        n: c.get("cpu_ns", 0) for n, c in c_rows.items()}
    # Columns come from the metric catalogue: each table metric the profile has.
    heads = page.eval("(() => { window.apiprof.show('funcs'); return Array.from("
                      "document.querySelectorAll('#funcs th')).map(t => t.textContent); })()")
    assert heads[:2] == ["function", "calls"] and "await" in heads and "cpu" in heads
    assert "await net" not in heads   # a catalogue metric that this profile does not have
    page.eval("window.apiprof.show('flame')")
    assert page.eval("Array.from(document.getElementById('metric').options).map(o => o.value)") \
        == ["wall", "cpu", "await", "memory"]
    assert page.errors == []


def test_html_report_of_100k_nodes_renders(browser, tmp_path):
    src = write(big_spec(100_000), tmp_path / "big.apiprof")
    t0 = time.monotonic()
    html = report(src, tmp_path / "big.html")
    written = time.monotonic() - t0
    page = browser.open(html.as_uri())
    page.wait_for(READY, timeout=60)
    assert page.errors == []
    view = page.eval("({n: window.apiprof.view().n, drawn: window.apiprof.state.drawn})")
    assert view["n"] == 100_001
    assert 100 < view["drawn"] < view["n"]   # tiny frames are not drawn
    page.screenshot(ARTIFACTS / "flame-100k.png")
    assert written < 30   # generous: the benchmark measures; this only catches blow-ups


def test_svg_flame_graph_in_chromium(browser, shop, tmp_path):
    svg = report(shop, tmp_path / "flame.svg")
    page = browser.open(svg.as_uri() + "?s=fib")
    page.wait_for("window.apiprofFlame !== undefined")
    assert page.errors == []
    assert page.eval("document.documentElement.getAttribute('data-matches')") == "3"
    frames = page.eval("window.apiprofFlame.frames.length")
    assert frames == 14
    # A real click on list_items zooms it to the full width.
    box = page.eval("""(() => { const f = window.apiprofFlame.frames.find(f => f.label ===
        'list_items'); const r = f.rect.getBoundingClientRect();
        return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()""")
    page.click(box["x"], box["y"])
    assert page.eval("window.apiprofFlame.zoomed().label") == "list_items"
    assert page.eval("""window.apiprofFlame.frames.find(f => f.label === 'list_items')
        .rect.getAttribute('width')""") == "1180.00"
    assert page.eval("""window.apiprofFlame.frames.find(f => f.label === 'get_item')
        .g.classList.contains('hide')""") is True
    page.screenshot(ARTIFACTS / "svg-zoomed.png")
    assert page.errors == []


REAL_SCRIPT = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def work():
    total = 0
    for i in range(3):
        total += fib(15)
    return sorted(str(i) for i in range(2000))

if __name__ == "__main__":
    work()
"""


def test_real_profile_of_real_code(browser, tmp_path):
    """`apiprof run` on a real script, then the views of that real profile agree with the
    model's function table and with their consumers."""
    script = tmp_path / "prog.py"
    script.write_text(REAL_SCRIPT)
    prof = tmp_path / "prog.apiprof"
    r = subprocess.run([str(APIPROF), "run", "-q", "-o", str(prof), str(script)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    funcs = {f["qualname"]: f for f in json.loads(subprocess.run(
        [str(APIPROF), "report", str(prof), "-f", "json"], capture_output=True, text=True,
        check=True).stdout)["functions"]}
    assert funcs["fib"]["calls"] == 3 * 1973   # fib(15) makes 1973 calls
    total_self = sum(f["self_ns"] for f in funcs.values())
    collapsed = subprocess.run([str(APIPROF), "report", str(prof), "-f", "collapsed"],
                               capture_output=True, text=True, check=True).stdout
    assert sum(int(line.rsplit(" ", 1)[1]) for line in collapsed.splitlines()) == total_self
    pb = report(prof, tmp_path / "prog.pb.gz")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    top = subprocess.run(["go", "tool", "pprof", "-top", "-unit=ns", str(pb)],
                         capture_output=True, text=True, timeout=120, env=env).stdout
    assert f"of {total_self}ns total" in top
    html = report(prof, tmp_path / "prog.html")
    page = browser.open(html.as_uri())
    page.wait_for(READY)
    assert page.errors == []
    js = {r["name"]: r for r in page.eval("window.apiprof.functions()")}
    for name in ("fib", "work"):
        assert (js[name]["calls"], js[name]["prim"], js[name]["self"]) == (
            funcs[name]["calls"], funcs[name]["primitive_calls"], funcs[name]["self_ns"])
    page.eval("window.apiprof.show('flame')")
    fib = page.eval("window.apiprof.rectOf('fib')")
    page.click(fib["x"], fib["y"])
    assert page.eval("window.apiprof.state.zoom") == fib["node"]
    page.screenshot(ARTIFACTS / "real-profile-zoomed.png")


LINES_SCRIPT = """
import asyncio

import apiprof


@apiprof.profile
def work(n):
    total = 0
    for i in range(n):
        total += i & 7
    return total


@apiprof.profile
async def handler():
    await asyncio.sleep(0.02)
    return work(10)


if __name__ == "__main__":
    for _ in range(3):
        work(500)
    asyncio.run(handler())
"""


def test_line_profile_heat(browser, tmp_path):
    """A real `apiprof lines` profile: line nodes under their function node. The source view
    shows each line's hits (AP_M_HITS, not calls) and time; the page's function table agrees
    with the model's, where a line node is neither a call nor an edge."""
    script = tmp_path / "prog.py"
    script.write_text(LINES_SCRIPT)
    prof = tmp_path / "prog.lines.apiprof"
    r = subprocess.run([str(APIPROF), "lines", "-q", "-o", str(prof), str(script)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(subprocess.run([str(APIPROF), "report", str(prof), "-f", "json"],
                                     capture_output=True, text=True, check=True).stdout)
    c_rows = {f["qualname"]: f for f in data["functions"]}
    assert c_rows.keys() == {"work", "handler"}
    html = report(prof, tmp_path / "prog.html")
    page = browser.open(html.as_uri())
    page.wait_for(READY)
    assert page.errors == [] and page.eval("window.apiprofErrors") == []
    js_rows = {r["name"]: r for r in page.eval("window.apiprof.functions()")}
    assert js_rows.keys() == c_rows.keys()
    for name, r in js_rows.items():
        c = c_rows[name]
        assert (r["calls"], r["prim"], r["self"], r["total"], r["await"]) == (
            c["calls"], c["primitive_calls"], c["self_ns"], c["total_ns"], c["await_ns"]), name
        assert (r["callers"], r["callees"]) == (len(c["callers"]), len(c["callees"])) == (0, 0)

    page.eval("window.apiprof.show('source')")
    for name in ("work", "handler"):
        page.eval(f"""(() => {{ const s = document.getElementById('source-func');
            s.value = Array.from(s.options).find(o => o.textContent === '{name}').value;
            s.dispatchEvent(new Event('change')); }})()""")
        rows = page.eval("""Array.from(document.querySelectorAll('#source tr')).slice(1).map(tr =>
            ({line: +tr.cells[0].textContent, hits: tr.cells[1].textContent,
              self: tr.cells[2].textContent, bar: tr.querySelector('.heat').style.width}))""")
        lines = {row["line"]: row for row in data["lines"] if row["function"] == name}
        shown = {row["line"]: row for row in rows if row["hits"]}
        assert shown.keys() == lines.keys(), name
        for no, row in lines.items():
            assert int(shown[no]["hits"]) == row["hits"], (name, no)
            assert shown[no]["self"] != ""
        hottest = max(lines.values(), key=lambda row: row["time_ns"])["line"]
        assert shown[hottest]["bar"] == "80px"
        page.screenshot(ARTIFACTS / f"lines-{name}.png")
    hits = {(row["function"], row["line"]): row["hits"] for row in data["lines"]}
    assert hits[("work", 9)] == 4 and hits[("work", 11)] == 3 * 500 + 10   # total = 0; loop body
    assert page.errors == []


def test_header_shows_dates_durations_and_sizes_not_raw_numbers(browser, tmp_path):
    spec = shop_spec(tmp_path / "tpl.py")
    spec["meta"].update({"started": "1764322027250000000", "stopped": "1764322028750000000",
                         "request.wall_ns": "9120000", "cut": "",
                         "memory_live_bytes": "28955354"})
    html = report(write(spec, tmp_path / "dated.apiprof"), tmp_path / "dated.html")
    page = browser.open(html.as_uri())
    page.wait_for(READY)
    summary = page.eval("document.getElementById('summary').textContent")
    assert "started: 2025-11-28 09:27:07 UTC" in summary, summary
    assert "stopped: 2025-11-28 09:27:08 UTC" in summary and "duration: 1.50 s" in summary
    assert "request.wall_ns: 9.12 ms" in summary and "1764322027" not in summary
    assert "memory_live_bytes: 27.6 MiB" in summary, summary
    assert "cut" not in summary, summary   # a whole profile's empty "cut" is left out
