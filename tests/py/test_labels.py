"""Route and task labels and the event timeline, filled by the tracer on real runs:
`apiprof run -m uvicorn` and the middleware on a real FastAPI app, named asyncio tasks,
and `apiprof report --format chrome` on a real `--timeline` profile."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest
from apiprof import Profiler, _core
from conftest import free_port
from helpers import REPO_ROOT, serve_profiled

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = REPO_ROOT / "tests" / "py" / "apps"
ITEMS, SYNC, SPAWN = "GET /items/{item_id}", "GET /sync/{n}", "GET /spawn"
K_ITEMS, L_SYNC = 4, 3
READY = "document.body && document.body.dataset.ready === '1'"


def apiprof(*args, cwd=None, timeout=120):
    return subprocess.run([str(APIPROF), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def serve_and_query(cmd: list[str], tmp_path: Path, env: dict[str, str], port: int) -> None:
    """Run the label app's server, send K_ITEMS requests to /items, L_SYNC to /sync and
    one to /spawn, then stop it with SIGINT (the profile is written at exit)."""
    def drive(client: httpx.Client) -> None:
        for i in range(K_ITEMS):
            assert client.get(f"/items/{100 + i}").json()["item_id"] == 100 + i
        for i in range(L_SYNC):
            assert client.get(f"/sync/{10 + i}").json()["total"] > 0
        assert client.get("/spawn").json() == {"r": 45}

    serve_profiled(cmd, APPS, env, port, tmp_path / "server.log", drive)


def calls(path: Path, *filters: str) -> dict[str, int]:
    """qualname -> calls in `apiprof report FILE --format json` with the filters."""
    r = apiprof("report", path, "--format", "json", *filters)
    assert r.returncode == 0, r.stderr
    return {f["qualname"]: f["calls"] for f in json.loads(r.stdout)["functions"]}


def router_routes() -> list:
    sys.path.insert(0, str(APPS))
    try:
        from label_app import app
    finally:
        sys.path.remove(str(APPS))
    return list(app.router.routes)


def check_route_profiles(out: Path) -> None:
    items = calls(out, "--route", ITEMS)
    assert items["read_item"] == K_ITEMS and items["item_work"] == K_ITEMS
    assert "sync_total" not in items and "spawn" not in items
    # The router's own matching is recorded once; the up-front match is not recorded:
    # the router tries the routes in order (APIRoute.matches calls Route.matches).
    routes = router_routes()
    paths = [getattr(r, "path", None) for r in routes]
    sent = {"/items/{item_id}": K_ITEMS, "/sync/{n}": L_SYNC, "/spawn": 1, "/health": 1}
    tried = {p: paths.index(p) + 1 for p in sent}
    api = {p: sum(type(r).__name__ == "APIRoute" for r in routes[:tried[p]]) for p in sent}
    assert items["Route.matches"] == K_ITEMS * tried["/items/{item_id}"]
    assert items["APIRoute.matches"] == K_ITEMS * api["/items/{item_id}"]
    everything = calls(out)
    assert everything["Route.matches"] == sum(n * tried[p] for p, n in sent.items())
    assert everything["APIRoute.matches"] == sum(n * api[p] for p, n in sent.items())
    sync = calls(out, "--route", SYNC)
    # the sync route and its sync dependency run in AnyIO's worker threads
    assert sync["sync_total"] == L_SYNC and sync["sync_dep"] == L_SYNC
    assert "read_item" not in sync and "item_work" not in sync
    spawn = calls(out, "--route", SPAWN)   # the task it starts copies its context
    assert spawn["spawn"] == 1 and spawn["task_body"] == 1 and spawn["item_work"] == 1
    whole = calls(out)
    assert whole["read_item"] == K_ITEMS and whole["sync_total"] == L_SYNC
    trees = _core.load(str(out)).trees()
    sync_threads = {t["labels"]["thread"] for t in trees if t["labels"].get("route") == SYNC}
    assert any(name != "MainThread" for name in sync_threads), sync_threads
    assert calls(out, "--route", ITEMS, "--thread", "MainThread")["read_item"] == K_ITEMS
    r = apiprof("report", out, "--route", "GET /nowhere")
    assert r.returncode != 0 and "no part of" in r.stderr and ITEMS in r.stderr


def chrome_spans(path: Path) -> tuple[dict, list[dict]]:
    """The Chrome trace of a profile, checked against the trace event format: a JSON
    object whose traceEvents are thread-name metadata and complete ("X") events with
    name, pid, tid, ts and dur; the spans of each tid nest (each one ends before its
    enclosing span does)."""
    r = apiprof("report", path, "--format", "chrome")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    events = doc["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "X"}
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    spans = [e for e in events if e["ph"] == "X"]
    per_tid: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for e in spans:
        assert isinstance(e["name"], str) and e["pid"] == 1 and e["tid"] in names
        assert e["ts"] >= 0 and e["dur"] >= 0
        per_tid[e["tid"]].append((round(e["ts"] * 1000), round(e["dur"] * 1000)))
    for tid, tid_spans in per_tid.items():
        open_ends: list[int] = []
        for start, dur in sorted(tid_spans, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or start + dur <= open_ends[-1], f"tid {tid} spans overlap"
            open_ends.append(start + dur)
    return doc, spans


def test_run_uvicorn_labels_routes_and_records_a_timeline(tmp_path):
    """`apiprof run --timeline -m uvicorn app:app`, no middleware: each route's own profile."""
    port = free_port()
    out = tmp_path / "labels.apiprof"
    serve_and_query([str(APIPROF), "run", "-q", "--timeline", "-o", str(out), "-m", "uvicorn",
                     "label_app:app", "--host", "127.0.0.1", "--port", str(port),
                     "--log-level", "warning"], tmp_path, {}, port)
    check_route_profiles(out)
    doc, spans = chrome_spans(out)
    assert doc["otherData"]["dropped_events"] == 0
    count = collections.Counter(e["name"] for e in spans)
    # sync functions: one span per call; read_item never suspends: one span per call too
    assert count["read_item"] == K_ITEMS and count["item_work"] == K_ITEMS + 1
    assert count["sync_total"] == L_SYNC and count["sync_dep"] == L_SYNC
    # read_item's spans are its route's, on the track of the thread that ran them
    read = [e for e in spans if e["name"] == "read_item"]
    assert {e["args"].get("route") for e in read} == {ITEMS}
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M"}
    assert {names[e["tid"]] for e in read} == {"MainThread"}


def test_middleware_labels_routes_for_a_labelling_profiler(tmp_path):
    """A Profiler(labels=True) started by the program itself around uvicorn.run: the
    route labels come from the middleware (apiprof run's layer is not there)."""
    port = free_port()
    out = tmp_path / "mw.apiprof"
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(f"""
        import uvicorn
        from apiprof import Profiler
        from label_app import app

        profiler = Profiler(labels=True)
        profiler.start()
        uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
        profiler.stop()
        profiler.save({str(out)!r})
    """))
    env = {"APIPROF_LABELS_MIDDLEWARE": "1", "PYTHONPATH": str(APPS)}
    serve_and_query([sys.executable, str(script)], tmp_path, env, port)
    check_route_profiles(out)


def test_html_route_filter_lists_the_real_routes(tmp_path):
    from cdp import Browser

    port = free_port()
    out = tmp_path / "labels.apiprof"
    serve_and_query([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn",
                     "label_app:app", "--host", "127.0.0.1", "--port", str(port),
                     "--log-level", "warning"], tmp_path, {}, port)
    html = tmp_path / "labels.html"
    r = apiprof("report", out, "-o", html)
    assert r.returncode == 0, r.stderr
    with Browser(tmp_path / "chromium") as browser:
        page = browser.open(html.as_uri())
        page.wait_for(READY)
        options = page.eval("Array.from(document.querySelectorAll('#filter-route option'))"
                            ".map(o => o.textContent)")
        assert options == ["(all)", "GET /health", ITEMS, SPAWN, SYNC]   # /health: polled
        page.eval(f"""(() => {{ const s = document.getElementById('filter-route');
            s.value = {json.dumps(SYNC)}; s.dispatchEvent(new Event('change')); }})()""")
        page.eval("window.apiprof.show('funcs')")
        funcs = {f["name"]: f["calls"] for f in page.eval("window.apiprof.functions()")}
        assert funcs["sync_total"] == L_SYNC and funcs["sync_dep"] == L_SYNC
        assert "read_item" not in funcs
        assert page.errors == []


TASKS = """
import asyncio

def work(n):
    return sum(range(n))

async def job(n):
    for _ in range(n):
        work(1000)
        await asyncio.sleep(0)

async def main():
    await asyncio.gather(asyncio.create_task(job(3), name="alpha"),
                         asyncio.create_task(job(5), name="beta"),
                         asyncio.create_task(job(2)))

asyncio.run(main())
"""


def test_task_labels_from_apiprof_run(tmp_path):
    script = tmp_path / "tasks.py"
    script.write_text(TASKS)
    out = tmp_path / "tasks.apiprof"
    r = apiprof("run", "-q", "-o", out, script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert calls(out, "--task", "alpha")["work"] == 3
    assert calls(out, "--task", "beta")["work"] == 5
    assert calls(out)["work"] == 10   # the unnamed task ("Task-<n>") has no label
    labels = {t["labels"].get("task") for t in _core.load(str(out)).trees()}
    assert labels == {None, "alpha", "beta"}
    bad = apiprof("report", out, "--task", "gamma")
    assert bad.returncode != 0 and "alpha" in bad.stderr


def test_task_labels_are_bounded():
    def work():
        return 1

    async def named(i):
        work()

    async def main():
        await asyncio.gather(*(asyncio.create_task(named(i), name=f"t{i}") for i in range(300)))

    p = Profiler(labels=True, builtins=False)
    with p:
        asyncio.run(main())
    trees = p.profile.trees()
    names = {t["labels"]["task"] for t in trees if "task" in t["labels"]}
    assert len(names) == 257 and "<other>" in names   # 256 names, then "<other>"
    assert {f["qualname"]: f["calls"] for f in p.functions()}["test_task_labels_are_bounded."
                                                                "<locals>.work"] == 300
    other = p.profile.select({"task": "<other>"}).functions()
    assert sum(f["calls"] for f in other if f["name"] == "work") == 300 - 256


def test_route_labels_follow_phases():
    from apiprof import _labels

    def work():
        return 1

    async def request(route, n):
        _core.label_set(_labels.ROUTE, route)
        for _ in range(n):
            work()
            await asyncio.sleep(0)

    async def main(n):
        await asyncio.gather(request("GET /a", n), request("GET /b", 2 * n))

    p = Profiler(labels=True, builtins=False)
    p.set_phase("one")
    with p:
        asyncio.run(main(3))
        p.set_phase("two")
        asyncio.run(main(5))
    for phase, n in (("one", 3), ("two", 5)):
        for route, k in (("GET /a", n), ("GET /b", 2 * n)):
            funcs = p.profile.select({"route": route, "phase": phase}).functions()
            assert sum(f["calls"] for f in funcs if f["name"] == "work") == k
    assert all("phase" in t["labels"] for t in p.profile.trees())


def test_timeline_ring_is_bounded_and_counts_what_it_dropped(tmp_path):
    def leaf():
        return None

    def outer():
        for _ in range(100):
            leaf()

    p = Profiler(builtins=False, timeline=10)
    with p:
        outer()
    path = tmp_path / "t.apiprof"
    p.save(path)
    doc, spans = chrome_spans(path)
    assert len(spans) == 10 and doc["otherData"]["dropped_events"] == 91   # 100 leaf + outer
    names = [e["name"] for e in spans]   # by start: outer, then the last nine leaf calls
    assert names[0].endswith("outer") and all(n.endswith("leaf") for n in names[1:])
    meta = _core.load(str(path)).meta
    assert meta["timeline_spans"] == "10" and meta["timeline_dropped"] == "91"
    script = tmp_path / "calls.py"
    script.write_text("def f():\n    pass\nfor _ in range(50):\n    f()\n")
    r = apiprof("run", "--timeline", "--timeline-events", "5", "-o", tmp_path / "c.apiprof",
                script, cwd=tmp_path)
    assert r.returncode == 0 and "kept the last 5 spans" in r.stderr, r.stderr


def test_timeline_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="wall"):
        Profiler(clock="cpu", timeline=10)
    with pytest.raises(ValueError, match="timeline"):
        Profiler(timeline=-1)
    script = tmp_path / "x.py"
    script.write_text("pass\n")
    r = apiprof("run", "--timeline", "--clock", "cpu", script, cwd=tmp_path)
    assert r.returncode == 2 and "--timeline needs --clock wall" in r.stderr
    r = apiprof("run", "--timeline", "--timeline-events", "0", script, cwd=tmp_path)
    assert r.returncode == 2 and "at least 1" in r.stderr
    r = apiprof("run", "-q", "-o", tmp_path / "x.apiprof", script, cwd=tmp_path)
    assert r.returncode == 0
    r = apiprof("report", tmp_path / "x.apiprof", "--format", "chrome")
    assert r.returncode != 0 and "no event timeline" in r.stderr


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="3.11 traces threads started by threading only (docs/cli.md)")
def test_label_trees_get_the_thread_name_found_later():
    """A thread runs labelled work before threading knows its name (a thread started
    with _thread that later calls threading.current_thread()): its label tree gets the
    thread's name at stop, like the thread's own tree."""
    import _thread
    import contextvars

    from apiprof import _labels

    def work():
        return 1

    done = threading.Event()

    def raw_thread():
        ctx = contextvars.copy_context()

        def labelled():
            _core.label_set(_labels.ROUTE, "GET /early")
            work()
        ctx.run(labelled)
        threading.current_thread()   # registers a _DummyThread: the thread has a name now
        work()
        done.set()

    p = Profiler(labels=True, builtins=False)
    with p:
        _thread.start_new_thread(raw_thread, ())
        assert done.wait(10)
    (early,) = [t["labels"] for t in p.profile.trees() if t["labels"].get("route") == "GET /early"]
    assert early.get("thread", "").startswith("Dummy-"), early
