"""Event-loop stalls in trace mode: the loop steps that ran at least the threshold, each
named by the line where the time went; in-process with asyncio and under a real uvicorn."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import apiprof
import httpx
import pytest
from apiprof import _core
from apiprof.asgi import ProfilerMiddleware
from apiprof.errors import ConfigurationError
from conftest import free_port
from helpers import SHOP_DIR, serve_profiled
from test_dashboard import dump_dom, route_rows

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
STALL_APP = APPS / "stall_app.py"
BLOCK_S = 0.15  # stall_app.BLOCK_S


def marked_line(path: Path, mark: str) -> int:
    """The line of path whose text contains mark."""
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if mark in text)


def export(profile) -> dict:
    return json.loads(profile.json())


def stack_names(doc: dict, stall: dict) -> list[str]:
    return [doc["frames"][i]["qualname"] for i in stall["stack"]]


def cold_start(doc: dict, stall: dict) -> bool:
    """A stall inside the import system (a first request importing a module)."""
    return any(doc["frames"][i]["file"].startswith("<frozen importlib") for i in stall["stack"])


# ---- in-process --------------------------------------------------------------------

def block_here() -> None:
    time.sleep(0.12)  # planted: blocks the loop


def blocking_helper() -> None:
    block_here()


async def blocks_the_loop() -> None:
    await asyncio.sleep(0.005)
    blocking_helper()
    await asyncio.sleep(0.005)


async def awaits_properly() -> None:
    for _ in range(4):
        await asyncio.sleep(0.04)


async def both() -> None:
    await asyncio.gather(blocks_the_loop(), awaits_properly(), blocks_the_loop())


def test_profiler_records_each_stall_with_its_line_and_duration():
    with apiprof.Profiler() as p:
        asyncio.run(both())
    doc = export(p.profile)
    assert doc["meta"]["stall_threshold_ns"] == "50000000"
    stalls = doc["stalls"]
    assert len(stalls) == 2, stalls                     # one per blocking task step
    line = marked_line(Path(__file__), "planted: blocks the loop")
    for s in stalls:
        assert s["function"] == "block_here"
        assert s["file"] == __file__ and s["line"] == line
        assert 0.12e9 <= s["duration_ns"] < 2 * 0.12e9
        names = stack_names(doc, s)
        assert names[-4:] == ["blocks_the_loop", "blocking_helper", "block_here", "time.sleep"]
        assert s["thread"] == "MainThread"
        # time.sleep runs off the CPU: the loop's thread used a sliver of the stall
        assert isinstance(s["cpu_ns"], int) and 0 < s["cpu_ns"] < s["duration_ns"] / 2
    assert stalls[1]["start_ns"] >= stalls[0]["start_ns"] + stalls[0]["duration_ns"]
    found = [f for f in doc["findings"] if f["kind"] == "loop_stall"]
    assert len(found) == 1 and found[0]["line"] == line and found[0]["count"] == 2
    assert "the rest it waited, in the call, for the GIL or for a core" in found[0]["message"]


def crunch() -> int:
    total = 0
    for i in range(600_000):  # pure Python: the loop's thread needs the GIL throughout
        total += i & 7
    return total


async def crunches() -> None:
    await asyncio.sleep(0)
    crunch()


def test_loop_starved_of_the_gil_is_one_finding_not_a_slow_line():
    """Two threads sorting big lists hold the GIL for tens of ms per call (a C call gives
    it up only when it returns): the loop's step in crunch() gets the GIL for its switch
    interval, then waits a whole sort. The stall records the loop thread's CPU; the
    finding blames the GIL, not crunch's line."""
    stop = threading.Event()
    running = threading.Barrier(3)
    data = [(i * 7919) % 300_007 for i in range(300_000)]

    def hog() -> None:
        running.wait()
        while not stop.is_set():
            sorted(data)

    hogs = [threading.Thread(target=hog) for _ in range(2)]
    for t in hogs:
        t.start()
    running.wait()
    try:
        with apiprof.Profiler(stall_threshold=0.01) as p:
            asyncio.run(crunches())
    finally:
        stop.set()
        for t in hogs:
            t.join()
    doc = export(p.profile)
    (stall,) = [s for s in doc["stalls"] if s["function"] == "crunch"]
    assert 0 < stall["cpu_ns"] < stall["duration_ns"] / 2
    kinds = {f["kind"]: f for f in doc["findings"]}
    # other steps may starve too (asyncio's start-up): crunch's is one of them
    assert "loop_starved" in kinds and kinds["loop_starved"]["count"] >= 1
    assert "it waited for the GIL" in kinds["loop_starved"]["message"]
    assert not [f for f in doc["findings"]
                if f["kind"] == "loop_stall" and f["function"] == "crunch"]


def test_threshold_is_honoured_and_can_be_turned_off():
    for threshold in (None, 0, 0.5):
        with apiprof.Profiler(stall_threshold=threshold) as p:
            asyncio.run(both())
        doc = export(p.profile)
        assert doc["stalls"] == [], threshold
        assert ("stall_threshold_ns" in doc["meta"]) == bool(threshold)
    with pytest.raises(ValueError, match="stall_threshold"):
        apiprof.Profiler(stall_threshold=-1)
    with apiprof.Profiler(clock="cpu") as p:               # a CPU clock cannot time a stall
        asyncio.run(both())
    assert export(p.profile)["stalls"] == []


def test_stalls_survive_the_native_file(tmp_path):
    with apiprof.Profiler() as p:
        asyncio.run(blocks_the_loop())
    path = tmp_path / "p.apiprof"
    p.save(str(path))
    again = export(_core.load(str(path)))
    assert [s["duration_ns"] for s in again["stalls"]] == [
        s["duration_ns"] for s in export(p.profile)["stalls"]]
    assert len(again["stalls"]) == 1 and again["stalls"][0]["function"] == "block_here"


# ---- under uvicorn -----------------------------------------------------------------

def serve_stall_app(tmp_path: Path, drive, *extra: str) -> dict:
    out = tmp_path / "stall.apiprof"
    port = free_port()
    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), *extra, "-m", "uvicorn",
                    "stall_app:app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
                   APPS, {}, port, tmp_path / "server.log", drive)
    r = subprocess.run([str(APIPROF), "report", str(out), "--format", "json", "-o",
                        str(tmp_path / "stall.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "stall.json").read_text())
    doc["_path"] = str(out)
    return doc


def concurrently(client: httpx.Client, paths: list[str], workers: int = 6) -> None:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(lambda path: client.get(path).status_code, paths))
    assert codes == [200] * len(paths)


def after_warmup(warm_paths: list[str], paths: list[str], workers: int = 6):
    """A drive function: warm_paths (each route's first request compiles and imports on
    the loop), then paths concurrently; it appends the monotonic time between the two to
    the list it returns with it. Stall starts are on the profile's clock, which is
    anchored to CLOCK_MONOTONIC, so that time splits them."""
    warm: list[int] = []

    def drive(client: httpx.Client) -> None:
        concurrently(client, warm_paths)
        warm.append(time.monotonic_ns())
        concurrently(client, paths, workers)

    return drive, warm


def test_blocking_helper_in_an_async_route_is_found_as_stalls(tmp_path):
    """Three /blocking requests among awaiting and fast ones under concurrent traffic:
    three stalls of GET /blocking at the planted line, two helpers deep, each about the
    blocking time; the awaiting and fast routes have none."""
    drive, warm = after_warmup(["/fast", "/awaiting", "/health"] * 2,
                               ["/blocking", "/awaiting", "/fast", "/fast"] * 3)
    doc = serve_stall_app(tmp_path, drive)
    line = marked_line(STALL_APP, "the planted blocking call")
    stalls = [s for s in doc["stalls"] if s["start_ns"] >= warm[0]]
    assert [s["route"] for s in stalls] == ["GET /blocking"] * 3, stalls
    for s in stalls:
        assert s["function"] == "pause_loop" and s["line"] == line
        assert s["file"] == str(STALL_APP)
        assert stack_names(doc, s)[-4:] == ["blocking", "prepare_report", "pause_loop",
                                            "time.sleep"]
        assert BLOCK_S * 1e9 <= s["duration_ns"] < 2 * BLOCK_S * 1e9
    finding = [f for f in doc["findings"] if f["kind"] == "loop_stall"
               and f["route"] != "GET /health"]   # a first request's cold start may stall
    assert len(finding) == 1 and finding[0]["route"] == "GET /blocking"
    assert finding[0]["line"] == line and finding[0]["count"] == 3
    text = subprocess.run([str(APIPROF), "report", doc["_path"]], capture_output=True,
                          text=True).stdout
    assert "event-loop stall: GET /blocking: the event loop stalled 3 times" in text
    assert f"apps/stall_app.py:{line} (time.sleep)" in text


def test_healthy_app_under_load_has_no_stalls(tmp_path):
    """Awaiting and fast routes under concurrent load, after a warm-up: no stall that the
    code made. A step during which the loop's thread was off the CPU for most of the time
    (the machine gave its core to others: CI runs two test workers on two cores) is the
    machine's, not the app's, and the report calls it so (loop_starved, not loop_stall)."""
    drive, warm = after_warmup(["/fast", "/awaiting", "/health"] * 2,
                               ["/fast", "/awaiting", "/fast", "/health"] * 40, workers=8)
    doc = serve_stall_app(tmp_path, drive)
    assert [s for s in doc["stalls"] if s["start_ns"] >= warm[0]
            and (s["cpu_ns"] is None or s["cpu_ns"] >= s["duration_ns"] / 2)] == []
    assert not [f for f in doc["findings"]
                if f["kind"] == "loop_stall" and f["route"] in ("GET /fast", "GET /awaiting")]


def test_stall_threshold_option(tmp_path):
    """--stall-threshold 0.5 is longer than the blocking call: no stall; the threshold is
    in the profile's metadata."""
    doc = serve_stall_app(tmp_path, lambda c: concurrently(c, ["/blocking"] * 2),
                          "--stall-threshold", "0.5")
    assert doc["meta"]["stall_threshold_ns"] == "500000000"
    assert [s for s in doc["stalls"] if s["route"] == "GET /blocking"] == []


def test_shop_login_blocks_the_loop(tmp_path):
    """The shop's documented blocking call in an async route (POST /login hashing the
    password on the event loop) comes out as a stall finding at the hashing line."""
    out = tmp_path / "shop.apiprof"
    port = free_port()

    def drive(client: httpx.Client) -> None:
        for _ in range(3):
            r = client.post("/login", json={"email": "ada@example.com", "password": "wrong"})
            assert r.status_code == 401

    # The hashing takes 40-60 ms depending on the Python and the machine: a 20 ms
    # threshold makes each login a stall on all of them.
    serve_profiled([str(APIPROF), "run", "-q", "--stall-threshold", "0.02", "-o", str(out),
                    "-m", "uvicorn", "shop.app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   SHOP_DIR, {"SHOP_DB": str(tmp_path / "shop.db")}, port,
                   tmp_path / "server.log", drive)
    found = [f for f in _core.load(str(out)).findings() if f["kind"] == "loop_stall"]
    db = SHOP_DIR / "shop" / "db.py"
    line = marked_line(db, "hashlib.pbkdf2_hmac(")
    login = [f for f in found if f["route"] == "POST /login"]
    assert login and login[0]["line"] == line, found
    assert login[0]["function"] == "hash_password"


# ---- lock contention -----------------------------------------------------------------

def test_with_lock_waits_go_to_the_acquiring_line_off_cpu():
    """Threads contending on `with lock:` (no call event): each wait is a `<lock wait>`
    call at the acquiring line under the acquiring function, off the CPU, and in
    wait_lock_ns of the frames open then; the function's self time leaves it out."""
    hold = 0.04
    p = apiprof.Profiler(locks=True, cpu=True)
    with p:
        lock = threading.Lock()

        def contend() -> None:
            with lock:  # acquiring line
                time.sleep(hold)

        threads = [threading.Thread(target=contend) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert threading.Lock is not _core.TimedLock        # restored at stop
    funcs = {f["qualname"]: f for f in p.functions()}
    wait = funcs["<lock wait>"]
    assert wait["file"] == __file__
    assert wait["line"] == marked_line(Path(__file__), "with lock:  # acquiring line")
    assert 1 <= wait["calls"] <= 3                       # the first acquisition did not wait
    assert wait["total_ns"] >= hold * 1e9                # at least one full hold
    assert wait["cpu_ns"] < 0.1 * wait["total_ns"]       # blocked, not running
    assert wait["wait_lock_ns"] == wait["total_ns"]
    contend_row = funcs["test_with_lock_waits_go_to_the_acquiring_line_off_cpu.<locals>.contend"]
    assert contend_row["wait_lock_ns"] == wait["total_ns"]
    assert contend_row["self_ns"] < 0.2 * wait["total_ns"]
    found = [f for f in p.profile.findings() if f["kind"] == "lock_contention"]
    assert len(found) == 1 and found[0]["line"] == wait["line"]
    assert found[0]["function"].endswith("contend") and found[0]["count"] == wait["calls"]


def test_with_rlock_waits_go_to_the_acquiring_line():
    """threading.RLock, swapped for TimedRLock while the profiler runs: a contended
    `with rlock:` is a `<lock wait>` at its line, a reentrant acquisition is never a wait,
    and a Condition built on it (its default lock) still works."""
    hold = 0.03
    p = apiprof.Profiler(locks=True)
    with p:
        rlock = threading.RLock()
        assert isinstance(rlock, _core.TimedRLock)
        cond = threading.Condition()

        def contend() -> None:
            with rlock:  # acquiring the rlock
                with rlock:  # reentrant: never waits
                    time.sleep(hold)

        threads = [threading.Thread(target=contend) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with cond:
            assert not cond.wait(0.001)
    assert threading.RLock is not _core.TimedRLock      # restored at stop
    waits = [f for f in p.functions() if f["qualname"] == "<lock wait>"]
    assert [w["line"] for w in waits] == [marked_line(Path(__file__), "# acquiring the rlock")]
    assert 1 <= waits[0]["calls"] <= 2 and waits[0]["total_ns"] >= hold * 1e9


def test_semaphore_waits_are_lock_waits_of_the_acquiring_function():
    """threading.Semaphore (made before the profiler, so not a timed lock inside) waits in
    `_thread.lock.acquire` under Condition.wait in threading.py: that is a lock wait (the
    generic rule) of the function holding the `with sem:`, apart from its sleep."""
    hold = 0.04
    sem = threading.BoundedSemaphore(1)

    def gated() -> None:
        with sem:  # the contended acquisition
            time.sleep(hold)

    p = apiprof.Profiler(locks=True)
    with p:
        threads = [threading.Thread(target=gated) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    row = next(f for f in p.functions() if f["qualname"].endswith("gated"))
    # three holds one after another: the second waited one, the third two
    assert row["calls"] == 3 and row["wait_sleep_ns"] >= 3 * hold * 1e9
    assert row["wait_lock_ns"] >= 2 * hold * 1e9, row
    assert row["wait_lock_ns"] + row["wait_sleep_ns"] <= row["total_ns"]


def test_timed_rlock_keeps_rlock_semantics():
    rlock = _core.TimedRLock()
    assert rlock.acquire() is True and rlock.acquire() is True and rlock._is_owned()
    rlock.release()
    rlock.release()
    with pytest.raises(RuntimeError):
        rlock.release()
    other: list[bool] = []
    with rlock:
        t = threading.Thread(target=lambda: other.append(rlock.acquire(timeout=0.01)))
        t.start()
        t.join()
    assert other == [False]


def test_timed_lock_keeps_lock_semantics():
    lock = _core.TimedLock()
    assert lock.acquire() is True and lock.locked()
    assert lock.acquire(False) is False
    assert lock.acquire(timeout=0.01) is False
    assert lock.acquire(blocking=False) is False
    lock.release()
    assert not lock.locked()
    with lock:
        assert lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    cond = threading.Condition(_core.TimedLock())
    with cond:
        assert not cond.wait(0.001)


def test_sync_routes_contending_on_a_lock_under_uvicorn(tmp_path):
    """Sync routes (thread pool) holding a threading.Lock during a slow section: the wait
    is attributed to the route's `with _LOCK:` line, off the CPU, as a lock_contention
    finding of GET /locked."""
    out = tmp_path / "lock.apiprof"
    port = free_port()
    serve_profiled([str(APIPROF), "run", "-q", "--cpu", "-o", str(out), "-m", "uvicorn",
                    "stall_app:app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
                   APPS, {}, port, tmp_path / "server.log",
                   lambda c: concurrently(c, ["/locked"] * 12, workers=6))
    profile = _core.load(str(out))
    line = marked_line(STALL_APP, "the contended acquisition")
    rows = [f for f in profile.functions() if f["qualname"] == "<lock wait>"
            and f["file"] == str(STALL_APP)]
    assert len(rows) == 1 and rows[0]["line"] == line
    assert rows[0]["total_ns"] >= 0.05e9 and rows[0]["cpu_ns"] < 0.1 * rows[0]["total_ns"]
    found = [f for f in profile.findings() if f["kind"] == "lock_contention"]
    assert [(f["route"], f["function"], f["line"]) for f in found] == [
        ("GET /locked", "locked", line)]


def test_shop_reserve_lock_contention(tmp_path):
    """The shop's documented lock contention (POST /inventory/{sku}/reserve holding
    _INVENTORY_LOCK across three database round trips) is found at its `with` line."""
    out = tmp_path / "shop.apiprof"
    port = free_port()

    def drive(client: httpx.Client) -> None:
        items = client.get("/products", params={"limit": 100}).json()["items"]
        best = max(items, key=lambda p: p["inventory"]["stock"])
        burst = min(16, best["inventory"]["stock"] - 2)
        assert burst >= 8
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: client.post(f"/inventory/{best['sku']}/reserve",
                                                        json={"quantity": 1}).status_code,
                                  range(burst)))
        assert codes == [200] * burst

    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn", "shop.app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   SHOP_DIR, {"SHOP_DB": str(tmp_path / "shop.db")}, port,
                   tmp_path / "server.log", drive)
    line = marked_line(SHOP_DIR / "shop" / "app.py", "with _INVENTORY_LOCK:")
    found = [f for f in _core.load(str(out)).findings() if f["kind"] == "lock_contention"]
    assert [(f["route"], f["function"], f["line"]) for f in found] == [
        ("POST /inventory/{sku}/reserve", "reserve", line)]
    assert found[0]["count"] > 1 and found[0]["severity"] == "high"   # a pattern: it repeats


def test_chrome_trace_carries_the_stalls(tmp_path):
    """apiprof run --timeline: the Chrome trace has the stalls on a track of their own,
    each a complete event as long as the stall, with its line and call path."""
    script = tmp_path / "blocker.py"
    script.write_text("import asyncio, time\n"
                      "def stop_the_world():\n"
                      "    time.sleep(0.08)\n"
                      "async def main():\n"
                      "    await asyncio.sleep(0)\n"
                      "    stop_the_world()\n"
                      "asyncio.run(main())\n")
    out = tmp_path / "b.apiprof"
    r = subprocess.run([str(APIPROF), "run", "-q", "--timeline", "-o", str(out), str(script)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(APIPROF), "report", str(out), "--format", "chrome", "-o",
                        str(tmp_path / "t.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    stalls = [e for e in events if e.get("cat") == "stall"]
    assert len(stalls) == 1
    s = stalls[0]
    assert s["name"] == "stall: stop_the_world:3" and s["args"]["line"] == 3
    assert s["dur"] >= 80_000 and s["args"]["stack"][-3:] == ["main", "stop_the_world",
                                                               "time.sleep"]
    track = [e for e in events if e["ph"] == "M" and e["tid"] == s["tid"]]
    assert track[0]["args"]["name"] == "event-loop stalls"


def test_middleware_counts_each_routes_stalls(serve, http, tmp_path):
    """The always-on middleware: a step of a request's own code on the event loop of
    stall_ms or more is a stall of its route. /blocking's helper holds the loop 150 ms
    once per request; /awaiting awaits as long; /locked is sync (the thread pool runs
    it); none of those but /blocking blocks the loop."""
    stats_dir = tmp_path / "stats"
    token = "stall-token-0123456789abcdef"
    # stall_ms 100, not the default 50: /blocking's 150 ms are stalls either way, and on
    # a machine loaded by parallel tests a step of another route descheduled for 50 ms
    # counted once as a stall of /locked (CI, 3.12)
    server = serve("stall_mw_app:app", cwd=APPS, health="/health",
                   env={"APIPROF_TEST_OPTIONS": json.dumps(
                       {"stats_dir": str(stats_dir), "token": token, "dashboard": True,
                        "stall_ms": 100})})
    for path, n in (("/blocking", 6), ("/awaiting", 4), ("/locked", 4), ("/fast", 20)):
        for _ in range(n):
            assert http.get(f"{server.url}{path}").status_code == 200
    # the dashboard, in Chromium: the stall columns shown, /blocking's count in red
    dom = dump_dom(f"{server.url}/_apiprof?apiprof={token}&sort=stalls", tmp_path / "chrome")
    assert re.search(r'<body[^>]*class="[^"]*stalls', dom) and 'data-sort="stalls"' in dom
    first = route_rows(dom)[0]
    assert first[0] == "/blocking" and first[-11] == "6", first   # stalls, 11th from the end
    assert '<td class="stall some">6</td>' in dom
    # where: the watchdog caught the loop's thread at the planted line, every time
    line = marked_line(APPS / "stall_app.py", "the planted blocking call")
    assert first[-8] == f"stall_app.py:{line} pause_loop (6 of 6)", first
    # each stall is 150 ms and more: none in the buckets up to 100 ms
    spread = html.unescape(first[-9])
    assert re.fullmatch(r"(<=\d+:\d+ ?)+", spread) and sum(
        int(c.split(":")[1]) for c in spread.split()) == 6, spread
    assert not re.search(r"<=(10|25|50|100):", spread), spread
    assert server.stop() in (0, -2)
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {x["route"]: x for x in json.loads(r.stdout)["routes"]}
    assert {k: rows[k]["stalls"] for k in ("/blocking", "/awaiting", "/locked", "/fast")} == \
        {"/blocking": 6, "/awaiting": 0, "/locked": 0, "/fast": 0}
    assert rows["/blocking"]["stall_max_ns"] >= 150_000_000
    assert rows["/blocking"]["stall_ns"] >= 6 * 150_000_000
    hist = rows["/blocking"]["stall_hist"]   # [le_ns, count] per bucket, the last open
    assert [le for le, _ in hist] == [10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9, 2.5e9, 5e9,
                                      None]
    assert sum(n for _, n in hist) == 6 and sum(n for le, n in hist[:4]) == 0
    assert all(n == 0 for _, n in rows["/awaiting"]["stall_hist"])
    site, = rows["/blocking"]["stall_sites"]
    assert site["function"] == "pause_loop" and site["line"] == line, site
    assert site["file"] == str(APPS / "stall_app.py") and site["stalls"] == 6, site
    assert site["path"] == "blocking > prepare_report > pause_loop", site
    assert site["ns"] == rows["/blocking"]["stall_ns"], site
    assert site["max_ns"] == rows["/blocking"]["stall_max_ns"], site
    assert all(rows[k]["stall_sites"] == [] for k in ("/awaiting", "/locked", "/fast"))
    table = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--sort", "stalls"],
                           capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert "stalls" in table[1].split() and table[2].split()[:1] == ["/blocking"]
    assert "stalls by ms" in table[1] and re.search(r" <=\d+:\d", table[2]), table[:3]
    assert "stalled at" in table[1] and f"stall_app.py:{line} pause_loop (6 of 6)" in table[2]


def test_middleware_charges_a_stall_with_the_requests_it_held_up(serve, http, tmp_path):
    """Three /awaiting requests are in flight (each awaits 150 ms) when a /blocking request
    stalls the loop for 150 ms: the stall held each of them up for its whole length. Its
    route is charged the stall's time three times ("others held"), theirs the time they
    waited on it ("held up"), not their own code."""
    stats_dir = tmp_path / "stats"
    server = serve("stall_mw_app:app", cwd=APPS, health="/health",
                   env={"APIPROF_TEST_OPTIONS": json.dumps({"stats_dir": str(stats_dir)})})
    codes: list[int] = []
    waiting = [threading.Thread(target=lambda: codes.append(
        http.get(f"{server.url}/awaiting").status_code)) for _ in range(3)]
    for t in waiting:
        t.start()
    time.sleep(0.05)   # they are in, awaiting
    assert http.get(f"{server.url}/blocking").status_code == 200
    for t in waiting:
        t.join()
    assert codes == [200, 200, 200]
    assert http.get(f"{server.url}/blocking").status_code == 200   # alone: holds nobody up
    assert server.stop() in (0, -2)
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json"],
                       capture_output=True, text=True, timeout=60)
    rows = {x["route"]: x for x in json.loads(r.stdout)["routes"]}
    blocking, awaiting = rows["/blocking"], rows["/awaiting"]
    assert blocking["stalls"] == 2 and blocking["delayed"] == 0, blocking
    one, other = blocking["stall_max_ns"], blocking["stall_ns"] - blocking["stall_max_ns"]
    assert blocking["stall_cost_ns"] in (3 * one, 3 * other), blocking   # the first's, x3
    assert awaiting["stalls"] == 0 and awaiting["delayed"] == 3, awaiting
    assert 3 * 150_000_000 <= awaiting["delayed_ns"] <= blocking["stall_cost_ns"], awaiting
    table = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir)],
                           capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert "others held ms" in table[1] and "held up ms" in table[1], table[:2]


def test_middleware_watchdog_catches_a_computing_step_and_profiles_keep_it(serve, http,
                                                                         tmp_path):
    """A step that holds the loop computing in Python (no blocking call) is caught too:
    the watchdog gets the GIL at the interpreter's next switch and finds the loop's thread
    in crunch's loop. An on-demand profile of such a request carries the stall with its
    call path (its "stalls", the loop_stall finding), which its tracer alone cannot see.
    With stall_stacks=False the stalls are counted and no site is kept."""
    stats_dir = tmp_path / "stats"
    token = "stall-token-0123456789abcdef"
    server = serve("stall_mw_app:app", cwd=APPS, health="/health",
                   env={"APIPROF_TEST_OPTIONS": json.dumps(
                       {"stats_dir": str(stats_dir), "token": token})})
    for _ in range(4):
        assert http.get(f"{server.url}/spin").status_code == 200
    doc = http.get(f"{server.url}/blocking", headers={"X-Apiprof-Token": token,
                                                       "X-Apiprof-Report": "json"}).json()
    assert server.stop() in (0, -2)
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json"],
                       capture_output=True, text=True, timeout=60)
    rows = {x["route"]: x for x in json.loads(r.stdout)["routes"]}
    spin = rows["/spin"]
    assert spin["stalls"] == 4 and sum(s["stalls"] for s in spin["stall_sites"]) == 4, spin
    loop = marked_line(APPS / "stall_app.py", "the planted CPU-bound loop")
    for site in spin["stall_sites"]:
        assert site["function"] in ("crunch", "crunch.<locals>.<genexpr>"), site
        assert loop <= site["line"] <= loop + 1, site
        assert site["path"].startswith("spin > crunch"), site
    # the on-demand profile of /blocking: its stall, from the watchdog
    stall, = doc["stalls"]
    line = marked_line(APPS / "stall_app.py", "the planted blocking call")
    assert (stall["function"], stall["line"], stall["route"]) == ("pause_loop", line,
                                                                   "GET /blocking"), stall
    stack = [doc["frames"][i]["qualname"] for i in stall["stack"]]
    assert stall["duration_ns"] >= 150_000_000 and stack[-3:] == [
        "blocking", "prepare_report", "pause_loop"], (stall, stack)
    found = [f for f in doc["findings"] if f["kind"] == "loop_stall"]
    assert found and f"stall_app.py:{line}" in found[0]["message"], doc["findings"]

    blocking = blocking_row(serve, http, tmp_path / "off", 2, stall_stacks=False)
    assert blocking["stalls"] == 2 and blocking["stall_sites"] == [], blocking


def blocking_row(serve, http, stats_dir: Path, n: int, **options) -> dict:
    """The statistics of /blocking after n requests to stall_mw_app under options."""
    server = serve("stall_mw_app:app", cwd=APPS, health="/health",
                   env={"APIPROF_TEST_OPTIONS": json.dumps(
                       {"stats_dir": str(stats_dir), **options})})
    for _ in range(n):
        assert http.get(f"{server.url}/blocking").status_code == 200
    assert server.stop() in (0, -2)
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json"],
                       capture_output=True, text=True, timeout=60)
    return next(x for x in json.loads(r.stdout)["routes"] if x["route"] == "/blocking")


def test_middleware_stall_threshold(serve, http, tmp_path):
    """stall_ms: a 150 ms step is no stall at 200 ms; None counts none."""
    for stall_ms in (200, None):
        blocking = blocking_row(serve, http, tmp_path / f"stats-{stall_ms}", 3,
                                stall_ms=stall_ms)
        assert blocking["count"] == 3 and blocking["stalls"] == 0, (stall_ms, blocking)


def test_middleware_stall_ms_is_checked():
    async def app(scope, receive, send):  # pragma: no cover - never called
        pass
    for bad in (0, -5):
        with pytest.raises(ConfigurationError):
            ProfilerMiddleware(app, stall_ms=bad)
