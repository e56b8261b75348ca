"""Wait kinds (src/core/ap_wait.c) under real uvicorn: each route of waits_app waits on
one known thing, and the profile says which, per route, per function (JSON "waits"),
and in the text report's route split."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import REPO_ROOT, serve_profiled
from test_dashboard import dump_dom, route_rows

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = REPO_ROOT / "tests" / "py" / "apps"
REQUESTS = 3


@pytest.fixture(scope="module")
def waits_profile(tmp_path_factory: pytest.TempPathFactory, serve_module) -> Path:
    tmp = tmp_path_factory.mktemp("waits")
    upstream = serve_module("waits_app:upstream_app", cwd=APPS, health="/slow")
    (tmp / "waits.bin").write_bytes(os.urandom(4 << 20))
    port = free_port()
    out = tmp / "waits.apiprof"

    def drive(client: httpx.Client) -> None:
        for path in ("/upstream", "/sleep", "/db", "/file"):
            for _ in range(REQUESTS):
                assert client.get(path).status_code == 200

    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn", "waits_app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   APPS, {"UPSTREAM_URL": upstream.url, "WAITS_DB": str(tmp / "waits.db"),
                          "WAITS_FILE": str(tmp / "waits.bin")}, port, tmp / "server.log", drive)
    return out


def routes(path: Path) -> dict[str, dict]:
    return {r["route"]: r for r in _core.load(str(path)).routes()}


def largest(waits: dict[str, int]) -> str:
    return max(waits, key=waits.__getitem__)


def test_each_route_waits_on_what_it_calls(waits_profile):
    r = routes(waits_profile)
    up, nap, db, f = r["GET /upstream"], r["GET /sleep"], r["GET /db"], r["GET /file"]
    # a 50 ms upstream call is network; a 50 ms asyncio.sleep is sleep
    assert largest(up["waits"]) == "network"
    assert up["waits"]["network"] >= 0.9 * REQUESTS * 50e6
    assert largest(nap["waits"]) == "sleep"
    assert nap["waits"]["sleep"] >= 0.9 * REQUESTS * 50e6
    assert not {"network", "database"} & set(nap["waits"])
    assert not {"database", "sleep"} & set(up["waits"])
    # a sqlite query is database, most of the route's time; file reads are file
    assert largest(db["waits"]) == "database"
    assert db["waits"]["database"] >= 0.5 * db["work_ns"]
    assert db["running_ns"] < db["work_ns"] - db["waits"]["database"] + 1
    assert largest(f["waits"]) == "file"
    assert "network" not in db["waits"] and "network" not in f["waits"]


def test_json_groups_waits_per_function(waits_profile):
    doc = json.loads(subprocess.run([str(APIPROF), "report", str(waits_profile), "--format",
                                     "json"], capture_output=True, text=True, check=True).stdout)
    funcs = {f["qualname"]: f for f in doc["functions"]}
    assert largest(funcs["upstream"]["waits"]) == "network"
    assert set(funcs["nap"]["waits"]) == {"sleep"}
    assert funcs["nap"]["waits"]["sleep"] == funcs["nap"]["wait_sleep_ns"]
    assert funcs["nap"]["waits"]["sleep"] >= 0.9 * REQUESTS * 50e6
    assert set(funcs["query"]["waits"]) == {"database"}
    assert set(funcs["read_file"]["waits"]) == {"file"}
    # the export read back keeps the metrics (the derived "waits" come from them)
    back = _core.loads(json.dumps(doc).encode())
    again = {f["qualname"]: f for f in back.functions()}
    assert again["query"]["wait_database_ns"] == funcs["query"]["wait_database_ns"]


def test_text_report_splits_each_route(waits_profile):
    out = subprocess.run([str(APIPROF), "report", str(waits_profile)], capture_output=True,
                         text=True, check=True).stdout
    lines = {ln.split()[1]: ln for ln in out.splitlines()
             if ln.startswith("GET ") and len(ln.split()) > 2}
    assert "network" in out and "database" in out
    head = next(ln for ln in out.splitlines() if ln.split()[:1] == ["route"])   # the columns
    cols = head.split()
    row = lines["/db"].split()
    assert row[cols.index("database") + 1].endswith("ms")   # +1: "GET /db" is two words


TOKEN = "t0ken-for-the-waits-0123456789abc"


def test_stats_split_each_routes_profiled_requests_by_wait_kind(serve_module, tmp_path):
    """Under the middleware alone: the requests profiled on demand give their route's
    waits by kind, which `apiprof stats` shows per route (text and JSON), per profiled
    request; requests not profiled count in the route's latency only."""
    upstream = serve_module("waits_app:upstream_app", cwd=APPS, health="/slow")
    (tmp_path / "waits.bin").write_bytes(os.urandom(1 << 20))
    stats_dir = tmp_path / "stats"
    server = serve_module("waits_mw_app:app", cwd=APPS, health="/health",
                          env={"UPSTREAM_URL": upstream.url, "APIPROF_TOKEN": TOKEN,
                               "APIPROF_STATS_DIR": str(stats_dir),
                               "WAITS_DB": str(tmp_path / "waits.db"),
                               "WAITS_FILE": str(tmp_path / "waits.bin")})
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as c:
        for path in ("/upstream", "/sleep", "/db"):
            for profiled in (True, True, False, False, False):
                headers = {"X-Apiprof-Token": TOKEN} if profiled else {}
                r = c.get(path, headers=headers)
                assert r.status_code == 200
                assert ("x-apiprof-profile" in r.headers) == profiled
    stats = [str(APIPROF), "stats", "--dir", str(stats_dir)]
    for _ in range(50):   # the worker's file is written every 0.2 s
        doc = json.loads(subprocess.run([*stats, "--json"], capture_output=True, text=True,
                                        check=True).stdout)
        rows = {r["route"]: r for r in doc["routes"] if r["status"] == "2xx"}
        if all(rows.get(p, {}).get("count") == 5 for p in ("/upstream", "/sleep", "/db")):
            break
        time.sleep(0.2)
    up, nap, db = rows["/upstream"], rows["/sleep"], rows["/db"]
    # the first /upstream profile is too large to keep (the client's first use): its
    # waits count all the same
    assert up["waited"] == nap["waited"] == db["waited"] == 2
    assert largest(up["waits"]) == "network" and up["waits"]["network"] >= 2 * 0.9 * 50e6
    assert largest(nap["waits"]) == "sleep" and nap["waits"]["sleep"] >= 2 * 0.9 * 50e6
    assert largest(db["waits"]) == "database"
    assert not {"network", "database"} & set(nap["waits"])
    health = {r["route"]: r for r in doc["routes"]}["/health"]
    assert health["waited"] == 0 and health["waits"] == {}
    text = subprocess.run(stats, capture_output=True, text=True, check=True).stdout
    assert "waits/profiled req, ms" in text
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert "network " in lines["/upstream"] and lines["/upstream"].endswith("(of 2)")
    assert lines["/db"].split("  ")[-1].strip().startswith("database ")
    assert lines["/health"].rstrip().endswith("-")
    # the dashboard, in Chromium: the same split per route
    dom = dump_dom(f"{server.url}/_apiprof?apiprof={TOKEN}", tmp_path / "chrome")
    assert re.search(r'<body[^>]*class="[^"]*waits', dom)
    shown = {r[0]: r for r in route_rows(dom)}
    assert [c for c in shown["/db"] if c.startswith("database ")][0].endswith("(of 2)")
    assert any(c.startswith("network ") for c in shown["/upstream"])
    assert "-" in shown["/health"]


def test_thread_pool_queueing_is_its_own_wait(tmp_path):
    """Six concurrent calls of a sync route that sleeps 200 ms, on a pool of 2 threads:
    two run at once, two wait 200 ms for a thread and two 400 ms (1.2 s); FastAPI then
    validates each response in the pool too, and those calls queue behind the sleeps
    still waiting (400 ms for the first two, 200 ms for the next two: 1.2 s), so the
    route waited about 2.4 s for the pool, which is also its finding; a sync route called
    one at a time waits for none."""
    port = free_port()
    out = tmp_path / "pool.apiprof"

    def drive(client: httpx.Client) -> None:
        for _ in range(3):
            assert client.get("/quick").status_code == 200

        async def six() -> list[int]:
            async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30,
                                         trust_env=False) as c:
                return [r.status_code for r in await asyncio.gather(
                    *(c.get("/slow") for _ in range(6)))]

        assert asyncio.run(six()) == [200] * 6

    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn", "pool_app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   APPS, {}, port, tmp_path / "server.log", drive)
    r = routes(out)
    pool = r["GET /slow"]["waits"].get("thread_pool", 0)
    assert pool >= 0.9 * 2 * (2 * 200e6 + 2 * 400e6), r["GET /slow"]["waits"]
    assert "thread_pool" not in r["GET /quick"]["waits"], r["GET /quick"]["waits"]
    full = [f for f in _core.load(str(out)).findings() if f["kind"] == "pool_queueing"]
    assert [(f["route"], f["value"]) for f in full] == [("GET /slow", pool)]
    assert "for a free thread of the thread pool" in full[0]["message"]
    text = subprocess.run([str(APIPROF), "report", str(out)], capture_output=True, text=True,
                          check=True).stdout
    assert "pool queue" in text.split("routes (latency")[1].splitlines()[1]
