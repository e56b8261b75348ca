"""Captured outgoing HTTP calls (apiprof run --queries; apiprof._queries): the app
tests/py/apps/calls_app.py calls a second uvicorn app on 127.0.0.1 with httpx (sync and
async), requests and aiohttp. Per route and line: method, host, path template (no query
string), status, count and time; a call repeated in one request is a repeated_call
finding; the time waiting for the upstream is network."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import serve_profiled

pytest.importorskip("aiohttp", reason="aiohttp does not install on this Python")
pytest.importorskip("requests", reason="requests does not install on this Python")

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
REQS = 2
USERS = 6


@pytest.fixture(scope="module")
def calls_profile(serve_module, tmp_path_factory: pytest.TempPathFactory):
    upstream = serve_module("upstream_app:app", cwd=APPS, health="/users/0")
    tmp = tmp_path_factory.mktemp("calls")
    port = free_port()
    out = tmp / "calls.apiprof"

    def drive(client: httpx.Client) -> None:
        for _ in range(REQS):
            assert client.get("/fanout").json() == list(range(USERS))
            assert client.get("/httpx-sync").json() == 1
            assert client.get("/requests").json() == 2
            assert client.get("/aiohttp").json() == 3
            assert client.get("/slow").json() == "slow"

    serve_profiled([str(APIPROF), "run", "--queries", "-q", "-o", str(out), "-m", "uvicorn",
                    "calls_app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
                    "warning"], APPS, {"UPSTREAM": upstream.url}, port, tmp / "server.log",
                   drive)
    return out, upstream.url.removeprefix("http://")


def calls(profile, route: str) -> dict[str, dict]:
    return {q["statement"]: q for q in profile.queries() if q["route"] == route}


def test_each_client_is_recorded_with_its_path_template(calls_profile):
    path, host = calls_profile
    profile = _core.load(str(path))
    fan = calls(profile, "GET /fanout")
    assert list(fan) == [f"GET {host}/users/{{id}} 200"]
    rec = fan[f"GET {host}/users/{{id}} 200"]
    assert (rec["kind"], rec["count"], rec["max_per_request"]) == ("http", REQS * USERS, USERS)
    assert rec["function"] == "fanout" and rec["total_ns"] > 0
    lines = Path(rec["file"]).read_text().splitlines()
    assert "await client.get(" in lines[rec["line"] - 1]
    for route, function in (("GET /httpx-sync", "httpx_sync"), ("GET /requests", "with_requests"),
                            ("GET /aiohttp", "with_aiohttp")):
        got = calls(profile, route)
        assert [(s, q["count"], q["function"]) for s, q in got.items()] == [
            (f"GET {host}/users/{{id}} 200", REQS, function)], (route, got)
    assert [(s, q["count"]) for s, q in calls(profile, "GET /slow").items()] == [
        (f"GET {host}/slow 200", REQS)]
    assert not any("s3cret" in q["statement"] or "token" in q["statement"]
                   for q in profile.queries())


def test_repeated_call_finding(calls_profile):
    path, host = calls_profile
    findings = _core.load(str(path)).findings()
    rep = [f for f in findings if f["kind"] == "repeated_call"]
    assert [(f["route"], f["count"]) for f in rep] == [("GET /fanout", REQS * USERS)]
    assert f"GET {host}/users/{{id}} 200" in rep[0]["message"]
    assert "up to 6 times in one request" in rep[0]["message"]
    # calls are no database statements: no N+1 query findings
    assert not [f for f in findings if f["kind"] in ("n_plus_one", "repeated_query")]


def test_upstream_wait_is_network(calls_profile):
    path, _ = calls_profile
    split = {r["route"]: r for r in _core.load(str(path)).routes()}
    waits = split["GET /slow"]["waits"]
    assert waits["network"] == max(waits.values()), waits
    assert waits["network"] >= REQS * 45_000_000 // 1      # two 50 ms upstream answers
    for route in ("GET /fanout", "GET /aiohttp", "GET /requests", "GET /httpx-sync"):
        assert split[route]["waits"].get("network", 0) > 0, (route, split[route]["waits"])


def test_calls_survive_the_native_file_and_the_json_export(calls_profile, tmp_path):
    path, _ = calls_profile
    doc = json.loads(subprocess.run([str(APIPROF), "report", str(path), "--format", "json"],
                                    capture_output=True, text=True, check=True).stdout)
    kinds = {q["statement"]: q["kind"] for q in doc["queries"]}
    assert set(kinds.values()) == {"http"}
    back = _core.loads(json.dumps(doc).encode()).queries()
    assert sorted(map(str, back)) == sorted(map(str, _core.load(str(path)).queries()))
    again = tmp_path / "again.apiprof"
    _core.loads(json.dumps(doc).encode()).save(str(again))
    assert _core.load(str(again)).queries() == back


def test_text_report_lists_the_calls(calls_profile):
    path, host = calls_profile
    text = subprocess.run([str(APIPROF), "report", str(path)], capture_output=True, text=True,
                          check=True).stdout
    section = text[text.index("queries and outgoing calls"):]
    fan = [line.split() for line in section.splitlines() if line.startswith("GET /fanout ")]
    assert len(fan) == 1
    assert fan[0][2:5] == ["call", str(REQS * USERS), str(USERS)]
    assert fan[0][-4:] == ["[repeated]", "GET", f"{host}/users/{{id}}", "200"]


TOKEN = "t0ken-for-the-calls-0123456789ab"


def test_on_demand_profile_holds_its_request_calls(serve_module, http):
    """A per-request profile of the middleware records the request's outgoing calls (and
    none of a request served beside it), as one request: the repeated call is marked."""
    upstream = serve_module("upstream_app:app", cwd=APPS, health="/users/0")
    server = serve_module("calls_mw_app:app", cwd=APPS, health="/health",
                          env={"UPSTREAM": upstream.url, "APIPROF_TOKEN": TOKEN})
    host = upstream.url.removeprefix("http://")

    async def both() -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, trust_env=False) as c:
            profiled, _ = await asyncio.gather(
                c.get("/fanout", headers={"X-Apiprof-Token": TOKEN}), c.get("/aiohttp"))
            return profiled

    resp = asyncio.run(both())
    assert resp.json() == list(range(USERS))
    doc = http.get(f"{server.url}/_apiprof/api/profiles/{resp.headers['x-apiprof-profile']}",
                   headers={"X-Apiprof-Token": TOKEN}).json()
    assert [(q["statement"], q["kind"], q["count"], q["max_per_request"], q["function"])
            for q in doc["queries"]] == [
        (f"GET {host}/users/{{id}} 200", "http", USERS, USERS, "fanout")]
    assert [f["kind"] for f in doc["findings"] if f["kind"] == "repeated_call"] == [
        "repeated_call"]
