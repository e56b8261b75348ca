"""The middleware's request memory (memory=True) under a real uvicorn: each route's
allocated bytes per request, what its requests kept, and the leak suspects, in the
statistics files, `apiprof stats` and the dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apiprof.asgi import ProfilerMiddleware
from apiprof.errors import ConfigurationError
from helpers import REPO_ROOT
from test_dashboard import dump_dom, route_rows

APPS = REPO_ROOT / "tests" / "py" / "apps"
APIPROF = Path(sys.executable).with_name("apiprof")
BLOCK = 10 * 1024
N = 200
TOKEN = "memory-token-0123456789abcdef"


def options(**kw) -> dict[str, str]:
    return {"APIPROF_TEST_OPTIONS": json.dumps(kw)}


def stats_json(stats_dir: Path) -> dict:
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_routes_that_keep_are_told_from_routes_that_churn(serve, http, tmp_path):
    stats_dir = tmp_path / "stats"
    # a small sampling interval: thousands of samples, so the estimates are close
    server = serve("memroutes_app:app", cwd=APPS, health="/kept",
                   env=options(memory=True, memory_rate=2048, stats_dir=str(stats_dir),
                               token=TOKEN, dashboard=True))
    for _ in range(N):
        for path in ("/keep", "/keep-sync", "/churn"):
            assert http.get(f"{server.url}{path}").status_code == 200
    assert http.get(f"{server.url}/kept").json() == {"kept": 2 * N}
    # the dashboard, in Chromium: the memory columns, sorted by live bytes, and the suspects
    dom = dump_dom(f"{server.url}/_apiprof?apiprof={TOKEN}&sort=live", tmp_path / "chrome")
    assert re.search(r'<body[^>]*class="[^"]*memory', dom) and 'data-sort="live"' in dom
    shown = route_rows(dom)
    assert {shown[0][0], shown[1][0]} == {"/keep", "/keep-sync"}
    live = {r[0]: r[-2] for r in shown}   # the column before the profiles' links
    assert live["/keep"].endswith(" MiB") and live["/keep-sync"].endswith(" MiB"), live
    assert not live["/churn"].endswith(" MiB"), live
    leaks = re.findall(r"<li>(leak suspect: [^<]*)</li>", dom)
    assert len(leaks) == 2 and all("KiB per request" in x for x in leaks), leaks
    assert server.stop() in (0, -2)
    data = stats_json(stats_dir)
    rows = {r["route"]: r for r in data["routes"]}
    for route in ("/keep", "/keep-sync", "/churn"):
        assert rows[route]["count"] == N and rows[route]["mem_requests"] == N, rows[route]
    suspects = {r["route"]: r for r in data["leak_suspects"]}
    assert sorted((r["route"], r["method"]) for r in suspects.values()) == [
        ("/keep", "GET"), ("/keep-sync", "GET")]
    for route in ("/keep", "/keep-sync"):   # the sync route's pool thread is the request's
        r = rows[route]
        # kept per request, leaving out the one that kept the most (the first request of
        # the sync route imports the thread pool's modules: a first use, not a leak)
        kept = suspects[route]["kept_per_request"]
        assert 0.8 * BLOCK < kept < 1.25 * BLOCK, (route, kept, r)
        assert r["retained_max"] <= r["retained_bytes"]
        # kept at the end: the block, and what the server frees just after the response
        assert r["retained_bytes"] / N > 0.8 * BLOCK, (route, r)
        assert r["alloc_bytes"] >= r["retained_bytes"] >= r["live_bytes"]
    churn = rows["/churn"]
    assert churn["alloc_bytes"] / N > 8 * BLOCK          # ten blocks made per request ...
    assert churn["live_bytes"] / N < 0.1 * BLOCK         # ... and none kept
    # the table shows the memory columns and names the suspects
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--sort", "live"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[-4:] == ["alloc/req", "kept/req", "live", "now"]
    assert lines[2].split()[0] in ("/keep", "/keep-sync")
    leaks = [line for line in lines if line.startswith("leak suspect:")]
    assert len(leaks) == 2 and all("KiB per request" in line for line in leaks), leaks


def test_without_memory_the_statistics_have_no_memory(serve, http, tmp_path):
    stats_dir = tmp_path / "stats"
    server = serve("memroutes_app:app", cwd=APPS, health="/kept",
                   env=options(stats_dir=str(stats_dir), token=TOKEN, dashboard=True))
    for _ in range(30):
        assert http.get(f"{server.url}/keep").status_code == 200
    dom = dump_dom(f"{server.url}/_apiprof?apiprof={TOKEN}", tmp_path / "chrome")
    assert "apiprof: routes" in dom and not re.search(r'<body[^>]*class="[^"]*memory', dom)
    assert "<li>" not in dom
    assert server.stop() in (0, -2)
    data = stats_json(stats_dir)
    keep = next(r for r in data["routes"] if r["route"] == "/keep")
    assert keep["count"] == 30
    assert keep["mem_requests"] == keep["alloc_bytes"] == keep["live_bytes"] == 0
    assert data["leak_suspects"] == []
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir)],
                       capture_output=True, text=True, timeout=60)
    assert "alloc/req" not in r.stdout and "leak suspect" not in r.stdout


def test_memory_options_are_checked():
    async def app(scope, receive, send):  # pragma: no cover - never called
        pass
    for bad in ({"memory": "yes"}, {"memory": True, "memory_rate": 0},
                {"memory": True, "memory_rate": 1.5}):
        with pytest.raises(ConfigurationError):
            ProfilerMiddleware(app, **bad)


def test_one_allocation_hook_per_process():
    """Under apiprof run --memory the middleware's request memory stays off, and says so."""
    code = (
        "import apiprof\n"
        "from apiprof.asgi.route_stats import start_request_memory\n"
        "p = apiprof.Profiler(memory='sampled')\n"
        "p.start()\n"
        "print(start_request_memory(4096))\n"
        "p.stop()\n"
        "print(start_request_memory(4096), start_request_memory(4096))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True"]
    assert r.stderr.count("apiprof: memory=True: request memory is off in this process") == 1


def test_live_bytes_follow_frees_across_other_tables_and_resets():
    """A request's kept block leaves its route's live bytes when freed, even after another
    route table (a merge of the stats files, say) came and went; after a reset, frees of
    blocks kept before it do not come off the new figures."""
    import contextvars

    from apiprof import _core

    table = _core.RouteTable()
    scope = {"type": "http", "method": "GET", "path": "/r", "root_path": ""}
    kept: list[bytearray] = []

    async def app() -> None:
        return None

    def request(size: int) -> None:
        req = table.request(scope, None)
        coro = app()
        req.run(coro)   # the request's context names it
        kept.append(bytearray(size))
        coro.close()
        req.finish(False, "/r")

    def live() -> int:
        (row,) = [r for r in table.snapshot() if r["route"] == "/r"]
        return row["live_bytes"]

    tracker = _core.MemoryTracker(None, mode="sampled", rate=1)   # every block sampled
    tracker.start()
    try:
        contextvars.copy_context().run(request, 100_000)
        assert 100_000 <= live() < 101_000
        other = _core.RouteTable()   # a merged table, made and dropped
        del other
        kept.clear()
        assert live() < 1_000
        contextvars.copy_context().run(request, 100_000)
        table.reset()
        contextvars.copy_context().run(request, 50_000)
        assert 50_000 <= live() < 51_000
        del kept[0]   # kept before the reset: not counted after it
        assert 50_000 <= live() < 51_000
        kept.clear()
        assert live() < 1_000
    finally:
        tracker.stop()
