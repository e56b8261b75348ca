"""apiprof.asgi.ProfilerMiddleware and apiprof.fastapi.instrument against a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import apiprof
import httpx
import pytest
import websockets
from helpers import REPO_ROOT

APPS = REPO_ROOT / "tests" / "py" / "apps"
APIPROF = Path(sys.executable).with_name("apiprof")
TOKEN = "t0ken-for-the-tests-0123456789"
STREAM_BYTES = 20 * 1024  # routes_app.STREAM_CHUNKS * len(STREAM_CHUNK)


def options(**kw) -> dict[str, str]:
    return {"APIPROF_TEST_OPTIONS": json.dumps(kw)}


@pytest.fixture(scope="module")
def plain(serve_module):
    """Statistics only (no options)."""
    return serve_module("routes_app:app", cwd=APPS, env=options())


def rows(http, url: str) -> dict[tuple[str, str, str], dict]:
    data = http.get(f"{url}/stats").json()
    return {(r["route"], r["method"], r["status"]): r for r in data["routes"]}


def test_exact_counts_per_route_template(plain, http):
    assert http.post(f"{plain.url}/reset").json() == {"reset": True}
    for i in range(7):
        assert http.get(f"{plain.url}/api/items/{i}").json() == {"item_id": i}
    for n in (10, 20, 30):
        assert http.get(f"{plain.url}/api/sync/{n}").status_code == 200
    assert http.get(f"{plain.url}/api/items/not-a-number").status_code == 422
    for path in ("/nope", "/api/nope/1"):
        assert http.get(f"{plain.url}{path}").status_code == 404
    assert http.delete(f"{plain.url}/api/items/1").status_code == 405
    got = rows(http, plain.url)
    counts = {k: r["count"] for k, r in got.items()}
    assert counts == {
        ("/reset", "POST", "2xx"): 1,
        ("/api/items/{item_id}", "GET", "2xx"): 7,
        ("/api/items/{item_id}", "GET", "4xx"): 1,
        ("/api/sync/{n}", "GET", "2xx"): 3,
        ("<unmatched>", "GET", "4xx"): 2,
        ("/api/items/{item_id}", "DELETE", "4xx"): 1,
    }
    assert all(r["errors"] == 0 for r in got.values())
    items = got[("/api/items/{item_id}", "GET", "2xx")]
    assert items["bytes_out"] == sum(len(json.dumps({"item_id": i}, separators=(",", ":")))
                                     for i in range(7))
    assert items["min_ns"] <= items["p50_ns"] <= items["p95_ns"] <= items["max_ns"]
    assert items["total_ns"] >= 7 * items["min_ns"]


def test_streamed_body_intact_and_timed_to_last_byte(plain, http):
    http.post(f"{plain.url}/reset")
    with http.stream("GET", f"{plain.url}/stream") as resp:
        chunks = list(resp.iter_raw())
    body = b"".join(chunks)
    assert body == b"0123456789abcdef" * 64 * 20 and len(body) == STREAM_BYTES
    assert len(chunks) > 1  # it did arrive in pieces
    # The request is recorded once its last byte has been sent, which the client may see
    # first: ask again for up to 5 s.
    deadline = time.monotonic() + 5
    while True:
        rows_ = [r for r in http.get(f"{plain.url}/stats").json()["routes"]
                 if r["route"] == "/stream"]
        if rows_ or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (row,) = rows_
    assert row["count"] == 1 and row["bytes_out"] == STREAM_BYTES
    # 20 chunks, each after a 10 ms sleep: the last byte leaves after about 200 ms (uvloop's
    # sleeps count from its cached loop time, so each can end a little early)
    assert row["max_ns"] >= 20 * 9_000_000


def test_cpu_counts_the_requests_own_steps(plain, http):
    http.post(f"{plain.url}/reset")
    assert http.get(f"{plain.url}/cpu").status_code == 200
    assert http.get(f"{plain.url}/sleep").status_code == 200
    got = rows(http, plain.url)
    cpu, sleep = got[("/cpu", "GET", "2xx")], got[("/sleep", "GET", "2xx")]
    assert cpu["cpu_ns"] >= 20_000_000  # the route spins 20 ms of thread CPU
    assert cpu["cpu_ns"] <= cpu["total_ns"]
    # asyncio.sleep(0.05) under uvloop counts from libuv's cached loop time, which can be a
    # little behind the real time when the call is made: the sleep can end a bit early
    assert sleep["total_ns"] >= 45_000_000
    assert sleep["cpu_ns"] < sleep["total_ns"] - 40_000_000  # the 50 ms await is not CPU


def test_contextvars_and_websockets_pass_through(plain, http):
    assert http.get(f"{plain.url}/ctx").text == "set-in-route"

    async def talk() -> list[str]:
        async with websockets.connect(plain.url.replace("http", "ws") + "/ws") as ws:
            await ws.send("hello")
            first = await ws.recv()
            await ws.send("again")
            second = await ws.recv()
            await ws.send("bye")
            return [first, second]

    assert asyncio.run(talk()) == ["HELLO", "AGAIN"]
    assert not [r for r in http.get(f"{plain.url}/stats").json()["routes"] if r["route"] == "/ws"]


def test_statistics_only_adds_no_headers_and_no_dashboard(plain, http):
    resp = http.get(f"{plain.url}/api/items/1")
    assert "server-timing" not in resp.headers
    assert not [h for h in resp.headers if h.startswith("x-apiprof")]
    for url in (f"{plain.url}/_apiprof?apiprof={TOKEN}", f"{plain.url}/_apiprof/api/stats"):
        assert http.get(url, headers={"X-Apiprof-Token": TOKEN}).status_code == 404


def test_exception_counted_and_reraised_unchanged(serve, http):
    server = serve("routes_app:app", cwd=APPS, env=options())
    for _ in range(2):  # uvicorn closes the connection after an app error: one client each
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            assert client.get(f"{server.url}/boom").status_code == 500
    got = rows(http, server.url)
    assert got[("/boom", "GET", "5xx")]["count"] == 2
    assert got[("/boom", "GET", "5xx")]["errors"] == 2
    assert server.stop() in (0, -2)
    log = server.log()
    assert log.count("routes_app.Boom: kaboom from the route") == 2
    last_frame = log.split("routes_app.Boom")[0].rstrip().splitlines()[-2]
    assert 'routes_app.py' in last_frame and "in boom" in last_frame


def test_server_timing_opt_in(serve, http):
    server = serve("routes_app:app", cwd=APPS, env=options(server_timing=True))
    resp = http.get(f"{server.url}/cpu")
    parts = dict(p.strip().split(";dur=") for p in resp.headers["server-timing"].split(","))
    assert set(parts) == {"app", "cpu", "await"}
    app, cpu, wait = (float(parts[k]) for k in ("app", "cpu", "await"))
    assert cpu >= 20.0 and app >= cpu and abs(app - cpu - wait) < 0.002
    assert resp.json() == {"ok": 1}


def test_tokens_guard_the_dashboard(serve, http):
    server = serve("routes_app:app", cwd=APPS,
                   env=options(token=TOKEN, on_demand=False, dashboard=True))
    for _ in range(3):
        http.get(f"{server.url}/api/items/5")
    missing = http.get(f"{server.url}/_apiprof")
    wrong = http.get(f"{server.url}/_apiprof", headers={"X-Apiprof-Token": TOKEN[:-1] + "x"})
    wrong_q = http.get(f"{server.url}/_apiprof/api/stats", params={"apiprof": "guess"})
    for resp in (missing, wrong, wrong_q):
        assert resp.status_code == 404 and resp.json() == {"detail": "Not Found"}
        assert not [h for h in resp.headers if h.startswith("x-apiprof")]
    page = http.get(f"{server.url}/_apiprof", headers={"X-Apiprof-Token": TOKEN})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    api = http.get(f"{server.url}/_apiprof/api/stats", params={"apiprof": TOKEN}).json()
    items = [r for r in api["routes"] if r["route"] == "/api/items/{item_id}"]
    assert [r["count"] for r in items] == [3]
    # with on_demand=False the right token does not profile a normal request
    resp = http.get(f"{server.url}/api/items/1", headers={"X-Apiprof-Token": TOKEN})
    assert resp.status_code == 200 and "x-apiprof-profile" not in resp.headers


def test_weak_token_fails_at_start_up():
    weak = ("import os; os.environ['APIPROF_TEST_OPTIONS'] = '{\"token\": \"short\"}';"
            " import routes_app")
    r = subprocess.run([sys.executable, "-c", weak], cwd=APPS, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "at least 16 characters" in r.stderr


def test_profile_options_are_checked():
    from apiprof.asgi import ProfilerMiddleware
    from apiprof.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="slow_ms needs a token"):
        ProfilerMiddleware(lambda s, r, w: None, slow_ms=100)
    with pytest.raises(ConfigurationError, match="slow_ms must be a positive"):
        ProfilerMiddleware(lambda s, r, w: None, token=TOKEN, slow_ms=0)
    ok = ProfilerMiddleware(lambda s, r, w: None, token=TOKEN, slow_ms=100)
    assert ok.profiles.index() == [] and ok.slow_candidates == 0


def test_two_workers_merged(serve, tmp_path):
    stats_dir = tmp_path / "stats"
    server = serve("routes_app:app", cwd=APPS, env=options(stats_dir=str(stats_dir)),
                   args=("--workers", "2"))
    k = 40
    # one connection per request, so that the kernel spreads them over both workers
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=30.0, trust_env=False, limits=limits) as client:
        for i in range(k):
            assert client.get(f"{server.url}/api/items/{i}").status_code == 200
        for _ in range(20):
            assert client.get(f"{server.url}/api/sync/1").status_code == 200
    assert server.stop() in (0, -2)
    files = sorted(stats_dir.glob("apiprof-routes-*.bin"))
    assert len(files) == 2  # each worker wrote its own file at shutdown
    per_file = []
    for path in files:
        table = apiprof._core.RouteTable()
        table.merge(path.read_bytes())
        per_file.append(sum(r["count"] for r in table.snapshot() if r["route"] != "/"))
    assert sum(per_file) == k + 20
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["workers"] == 2
    counts = {(x["route"], x["status"]): x["count"] for x in data["routes"]}
    assert counts[("/api/items/{item_id}", "2xx")] == k
    assert counts[("/api/sync/{n}", "2xx")] == 20
    table = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--sort", "count"],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0] == f"2 worker file(s) in {stats_dir}"
    assert lines[1].split()[:5] == ["route", "method", "status", "count", "errors"]
    assert lines[2].split()[:4] == ["/api/items/{item_id}", "GET", "2xx", str(k)]
    for key in ("p50", "p99", "max", "cpu"):   # every latency column sorts
        r = subprocess.run([str(APIPROF), "stats", "--dir", str(stats_dir), "--json", "--sort",
                            key], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        values = [x[f"{key}_ns"] for x in json.loads(r.stdout)["routes"]]
        assert values == sorted(values, reverse=True) and len(values) >= 2, key


def test_stats_cli_errors(tmp_path):
    def stats(*args, env=None):
        return subprocess.run([str(APIPROF), "stats", *args], capture_output=True, text=True,
                              timeout=60, env=env)

    env = {k: v for k, v in os.environ.items() if k != "APIPROF_STATS_DIR"}
    r = stats(env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--dir" in r.stderr
    r = stats("--dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    (tmp_path / "apiprof-routes-host-1.bin").write_bytes(b"APRT\x01garbage")
    r = stats("--dir", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "corrupt statistics file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "apiprof-routes-host-1.bin").unlink()
    r = stats("--dir", str(tmp_path))
    assert r.returncode == 0 and "no requests recorded" in r.stdout


def test_profile_store_is_bounded():
    from apiprof.asgi import ProfileStore

    store = ProfileStore(keep=2, max_total=3)
    for i in range(5):
        store.add("/a", {"id": f"a{i}"}, b"{}")
    assert [p["id"] for p in store.index()] == ["a4", "a3"]
    assert store.get("a0") is None and store.get("a4") == ({"id": "a4"}, b"{}")
    store.add("/b", {"id": "b0"}, b"[0]")
    store.add("/b", {"id": "b1"}, b"[1]")
    assert [p["id"] for p in store.index()] == ["b1", "b0", "a4"]  # a3, the oldest, went
    assert store.get("b0") == ({"id": "b0"}, b"[0]")


def test_stats_file_rewritten_while_idle(serve, http, tmp_path):
    """A live worker's file stays fresh without requests: readers can tell it from a
    dead or stuck one by its age."""
    stats_dir = tmp_path / "stats"
    server = serve("routes_app:app", cwd=APPS,
                   env=options(stats_dir=str(stats_dir), flush_s=0.2))
    assert http.get(f"{server.url}/api/items/1").status_code == 200
    time.sleep(0.5)
    (path,) = stats_dir.glob("apiprof-routes-*.bin")
    table = apiprof._core.RouteTable()
    table.merge(path.read_bytes())
    assert any(r["route"] == "/api/items/{item_id}" for r in table.snapshot())
    first = path.stat().st_mtime_ns
    time.sleep(1.0)  # no request meanwhile: only the interval writes the file
    assert path.stat().st_mtime_ns > first


def test_stats_cli_shows_as_of_times_and_stale_workers(tmp_path):
    table = apiprof._core.RouteTable()
    fresh = tmp_path / "apiprof-routes-host-1.bin"
    old = tmp_path / "apiprof-routes-host-2.bin"
    fresh.write_bytes(table.encode())
    old.write_bytes(table.encode())
    then = time.time() - 120
    os.utime(old, (then, then))
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()
             if line.startswith("  apiprof-routes-")}
    as_of = time.strftime("%Y-%m-%d %H:%M", time.gmtime(then))
    assert as_of in lines[old.name] and lines[old.name].endswith("STALE")
    assert "120 s ago" in lines[old.name] or "121 s ago" in lines[old.name]
    assert "STALE" not in lines[fresh.name]
    assert r.stderr.count("\n") == 1 and "1 of 2 worker file(s) stale" in r.stderr
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(tmp_path), "--json",
                        "--stale-after", "200"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    data = json.loads(r.stdout)
    assert data["stale_after_s"] == 200
    assert [(w["file"], w["stale"]) for w in data["worker_files"]] == [
        (fresh.name, False), (old.name, False)]
    assert data["worker_files"][1]["as_of"].startswith(as_of.replace(" ", "T"))
