"""Names from a profiled program never become markup or script: payloads in function,
file, route, thread and task names (and the title and metadata) shown in every view of
the HTML report, in the SVG flame graph and in the dashboard, in headless Chromium.

A payload that escaped its context would run (setting ``window.pwned``) or leave an
element or an ``on*`` attribute in the document; both are checked after every view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from apiprof.asgi import dashboard
from cdp import Browser
from profiles import fr, write

APIPROF = Path(sys.executable).with_name("apiprof")
READY = "document.body && document.body.dataset.ready === '1'"

# One payload per context: a single-quoted attribute, a double-quoted attribute, text, a
# script element, an SVG element, a JS string, CDATA, an entity.
PAYLOADS = [
    "q' autofocus tabindex=1 onfocus='window.pwned=1' onmouseover='window.pwned=1' x='",
    'd" autofocus tabindex=1 onfocus="window.pwned=2" x="',
    "<img src=x onerror=window.pwned=3>",
    "</script><script>window.pwned=4</script>",
    "<svg onload=window.pwned=5>",
    "';window.pwned=6;'\";window.pwned=6;\"`${window.pwned=6}`",
    "]]><script>window.pwned=7</script>",
    "&lt;img src=x onerror=window.pwned=8&gt;",
]

# Script that lists what an escape would have added: on* attributes and injected tags.
INJECTED = """(() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) if (/^on/i.test(a.name)) bad.push(el.tagName + ' ' + a.name);
    const tag = el.tagName.toLowerCase();
    if (tag === 'img' || (tag === 'svg' && el.parentElement.id !== 'graph' && el.id !== 'tl-svg'))
      bad.push(tag);
  }
  const scripts = document.querySelectorAll('script').length;
  return {bad: bad, scripts: scripts, pwned: window.pwned === undefined ? null : window.pwned};
})()"""


def payload_spec(src_dir: Path) -> dict:
    """A profile whose every name carries the payloads: functions, files (real source
    files, so the source view embeds them), routes, threads, tasks, metadata."""
    trees, events, stalls = [], [], []
    for i, p in enumerate(PAYLOADS):
        path = src_dir / f"f{i}{p.replace('/', '|')}.py"
        path.write_text("def handler():\n    x = 1\n    return x\n")
        handler = fr(f"h{i}{p}", str(path), 1)
        line = fr(f"h{i}{p}", str(path), 1, 2)
        nodes = [([handler], {"self_ns": 1000 + i, "calls": 1}),
                 ([handler, line], {"self_ns": 5000, "calls": 1}),
                 ([handler, fr(f"c{i}{p}", str(path), 3)], {"self_ns": 3000 + i, "calls": 2})]
        trees.append({"labels": {"route": f"GET /r{i}{p}", "thread": f"t{i}{p}",
                                 "task": f"k{i}{p}"}, "nodes": nodes})
        # The timeline: a lane per thread, a request span per route, a stall with its
        # call path, all named by the payloads.
        events += [(i, handler, i * 10_000, 8_000),
                   (i, fr(f"c{i}{p}", str(path), 3), i * 10_000 + 1_000, 3_000)]
        stalls.append({"start_ns": i * 10_000 + 500, "dur_ns": 6_000, "function": handler,
                       "line": 2, "thread": f"t{i}{p}", "route": f"GET /r{i}{p}",
                       "task": f"k{i}{p}", "stack": [handler, fr(f"c{i}{p}", str(path), 3)]})
    return {"meta": {"clock": "wall", "argv": PAYLOADS[0], "note": PAYLOADS[2]},
            "trees": trees, "events": events, "stalls": stalls}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


@pytest.fixture(scope="module")
def payload_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("payloads")
    return write(payload_spec(d), d / "p.apiprof")


def check_clean(page, what: str) -> None:
    found = page.eval(INJECTED)
    assert found["pwned"] is None, f"{what}: a payload ran ({found['pwned']})"
    assert found["bad"] == [], f"{what}: markup from a name: {found['bad']}"
    assert page.errors == [], what


def test_html_report_escapes_names_in_every_view(browser, payload_profile, tmp_path):
    out = tmp_path / "p.html"
    r = subprocess.run([str(APIPROF), "report", str(payload_profile), "-o", str(out),
                        "--title", PAYLOADS[1] + PAYLOADS[2]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = browser.open(out.as_uri())
    page.wait_for(READY)
    scripts = page.eval(INJECTED)["scripts"]
    check_clean(page, "flame")
    assert page.eval("document.title").startswith(PAYLOADS[1])
    for view in ("tree", "funcs", "graph", "source"):
        page.eval(f"window.apiprof.show('{view}')")
        check_clean(page, view)
    # Open every row of the call tree, focus each function in the table, the graph
    # and the source view, and hover every row: whatever an attribute held runs now.
    page.eval("window.apiprof.show('tree')")
    for _ in range(4):
        page.eval("""document.querySelectorAll('#tree .tn[data-node]').forEach(d => {
            if (d.dataset.open !== '1') d.querySelector('.tg').click(); })""")
    page.eval("""document.querySelectorAll('#tree span, #tree div').forEach(e => {
        e.focus(); e.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); })""")
    check_clean(page, "tree, all open")
    titles = page.eval("Array.from(document.querySelectorAll('#tree span[title]'))"
                       ".map(s => s.getAttribute('title'))")
    files = {str(Path(t)) for t in titles if t}
    assert any(PAYLOADS[0] in t for t in files) and any(PAYLOADS[1] in t for t in files)
    texts = page.eval("document.getElementById('tree').textContent")
    for p in PAYLOADS:
        assert f"h{PAYLOADS.index(p)}{p}" in texts   # shown as text, exactly
    nfuncs = page.eval("window.apiprof.view().funcs.length")
    for view in ("funcs", "graph", "source"):
        page.eval(f"window.apiprof.show('{view}')")
        for k in range(nfuncs):
            page.eval(f"window.apiprof.state.focus = window.apiprof.view().funcs[{k}].fn;"
                      f" window.apiprof.show('{view}')")
            page.eval("""document.querySelectorAll('.view.on *').forEach(e => {
                e.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); })""")
            check_clean(page, f"{view}, function {k}")
    page.eval("window.apiprof.show('source')")
    assert "x = 1" in page.eval("document.getElementById('source').textContent")
    # Each filter lists the labels as options, and choosing one works.
    for k in ("route", "thread", "task"):
        opts = page.eval(f"Array.from(document.getElementById('filter-{k}').options)"
                         ".map(o => o.value)")
        assert sorted(opts[1:]) == sorted(f"{dict(route='GET /r', thread='t', task='k')[k]}"
                                          f"{i}{p}" for i, p in enumerate(PAYLOADS))
        page.eval(f"""(() => {{ const s = document.getElementById('filter-{k}');
            s.selectedIndex = 1; s.dispatchEvent(new Event('change')); }})()""")
        for view in ("flame", "tree", "funcs", "graph", "source"):
            page.eval(f"window.apiprof.show('{view}')")
            check_clean(page, f"{view} filtered by {k}")
    page.eval("window.apiprof.search(" + json.dumps(PAYLOADS[5]) + ")")
    check_clean(page, "search")
    check_timeline(page)
    assert page.eval(INJECTED)["scripts"] == scripts


def check_timeline(page) -> None:
    """The timeline: lanes named by the threads, request spans by the routes, and every
    stall's panel (route, task, thread, call path), each hovered and clicked."""
    page.eval("window.apiprof.show('timeline')")
    check_clean(page, "timeline")
    lanes = page.eval("window.apiprof.timeline().lanes")
    # each thread had a stall: each lane is an event loop's
    assert sorted(lanes) == sorted(f"t{i}{p} (event loop)" for i, p in enumerate(PAYLOADS))
    titles = page.eval("Array.from(document.querySelectorAll('#tl-svg text.lane'))"
                       ".map(t => t.querySelector('title') ? t.querySelector('title').textContent"
                       " : t.textContent)")
    assert sorted(titles) == sorted(lanes)
    page.eval("""document.querySelectorAll('#tl-svg rect').forEach(e => {
        e.dispatchEvent(new MouseEvent('mousemove', {bubbles: true})); })""")
    check_clean(page, "timeline, hovered")
    n = page.eval("document.querySelectorAll('#tl-svg .tl-stall').length")
    assert n == len(PAYLOADS)
    for k in range(n):
        page.eval(f"""(() => {{ const r = document.querySelectorAll('#tl-svg .tl-stall')[{k}];
            r.dispatchEvent(new MouseEvent('mousedown', {{bubbles: true}}));
            r.dispatchEvent(new MouseEvent('mouseup', {{bubbles: true}})); }})()""")
        check_clean(page, f"timeline, stall {k}")
        panel = page.eval("document.getElementById('tl-stall').textContent")
        i = next(i for i, p in enumerate(PAYLOADS) if f"GET /r{i}{p}" in panel)
        p = PAYLOADS[i]
        assert f"task k{i}{p}" in panel and f"thread t{i}{p}" in panel
        path = page.eval("Array.from(document.querySelectorAll('#tl-stall li'))"
                         ".map(l => l.firstChild.textContent)")
        assert path == [f"h{i}{p} ", f"c{i}{p} "]


def test_svg_flame_graph_escapes_names(browser, payload_profile, tmp_path):
    out = tmp_path / "p.svg"
    r = subprocess.run([str(APIPROF), "report", str(payload_profile), "-o", str(out),
                        "--title", PAYLOADS[6]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = browser.open(out.as_uri())
    page.wait_for("window.apiprofFlame !== undefined")
    labels = page.eval("window.apiprofFlame.frames.map(f => f.label)")
    assert any(lab == f"h0{PAYLOADS[0]}" for lab in labels)
    page.eval("""window.apiprofFlame.frames.forEach((f, i) => {
        f.g.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
        window.apiprofFlame.zoom(i); })""")
    found = page.eval("""(() => { const bad = [];
        for (const el of document.querySelectorAll('*'))
          for (const a of el.attributes) if (/^on/i.test(a.name)) bad.push(el.tagName + a.name);
        return {bad: bad, scripts: document.querySelectorAll('script').length,
                pwned: window.pwned === undefined ? null : window.pwned}; })()""")
    assert found == {"bad": [], "scripts": 1, "pwned": None}
    assert page.errors == []


def test_dashboard_escapes_names(browser, tmp_path):
    route = {"route": "", "method": "GET", "status": "2xx", "count": 1, "errors": 0,
             "p50_ns": 1, "p90_ns": 1, "p95_ns": 1, "p99_ns": 1, "max_ns": 1, "total_ns": 1,
             "cpu_ns": 1, "bytes_out": 1}
    data = {"routes": [dict(route, route=f"/r{i}{p}", method=p, status=p)
                       for i, p in enumerate(PAYLOADS)],
            "profiles": [{"id": p, "kind": p, "route": f"/r{i}{p}", "method": p, "path": p,
                          "status": 200, "wall_ns": 1} for i, p in enumerate(PAYLOADS)],
            "workers": 1, "warning": PAYLOADS[3] + PAYLOADS[4]}
    # A dashboard path holding the page's own placeholders must not splice data into it.
    page_text = dashboard.render(data, "/x__DATA__y\"</script><script>window.pwned=9//")
    out = tmp_path / "dash.html"
    out.write_text(page_text)
    page = browser.open(out.as_uri())
    page.wait_for("document.getElementById('summary').textContent !== ''")
    page.eval("document.querySelectorAll('th.sortable').forEach(th => th.click())")
    check_clean(page, "dashboard")
    cells = page.eval("Array.from(document.querySelectorAll('#routes tbody td.route'))"
                      ".map(td => td.textContent)")
    assert sorted(cells) == sorted(f"/r{i}{p}" for i, p in enumerate(PAYLOADS))
    links = page.eval("Array.from(document.querySelectorAll('#profiles a'))"
                      ".map(a => a.getAttribute('href'))")
    # Two links per kept profile: its HTML report and its JSON.
    assert len(links) == 2 * len(PAYLOADS)
    assert len([h for h in links if h.endswith("/html")]) == len(PAYLOADS)
    assert all(h.startswith("/x__DATA__y\"</script><script>window.pwned=9///api/profiles/")
               for h in links), links
    assert PAYLOADS[3] + PAYLOADS[4] in page.eval(
        "document.getElementById('summary').textContent")
