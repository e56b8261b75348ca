"""Per-request profiles of apiprof.asgi.ProfilerMiddleware against a real uvicorn: on
demand (token), isolated from concurrent requests, sync routes in the thread pool, slow
capture and its ring bound."""

from __future__ import annotations

import asyncio
import json
import os

import apiprof
import httpx
import pytest
from helpers import REPO_ROOT

APPS = REPO_ROOT / "tests" / "py" / "apps"
TOKEN = "t0ken-for-the-profiles-0123456789"
AUTH = {"X-Apiprof-Token": TOKEN}


def options(**kw) -> dict[str, str]:
    return {"APIPROF_TEST_OPTIONS": json.dumps(kw)}


@pytest.fixture(scope="module")
def server(serve_module):
    """On-demand profiles and the dashboard."""
    return serve_module("routes_app:app", cwd=APPS, env=options(token=TOKEN, dashboard=True))


def calls(document: dict) -> dict[str, int]:
    """qualname -> calls of a profile's function table."""
    return {f["qualname"]: f["calls"] for f in document["functions"]}


def threads_of(document: dict, qualname: str) -> list[str]:
    """Names of the threads whose tree has a frame of ``qualname``."""
    ids = {i for i, f in enumerate(document["frames"]) if f["qualname"] == qualname}
    return [t["labels"].get("thread", "?") for t in document["threads"]
            if any(n["frame"] in ids for n in t["nodes"])]


def kept(http, url: str) -> list[dict]:
    return http.get(f"{url}/_apiprof/api/profiles", headers=AUTH).json()


def fetch(http, url: str, profile_id: str) -> dict:
    resp = http.get(f"{url}/_apiprof/api/profiles/{profile_id}", headers=AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    return resp.json()


def test_on_demand_profile_needs_the_right_token(server, http):
    before = kept(http, server.url)
    plain = http.get(f"{server.url}/api/items/2")
    wrong = http.get(f"{server.url}/api/items/2", headers={"X-Apiprof-Token": "x" * 30})
    wrong_q = http.get(f"{server.url}/api/items/2", params={"apiprof": TOKEN[:-1]})
    for resp in (plain, wrong, wrong_q):
        assert resp.json() == {"item_id": 2}
        assert not [h for h in resp.headers if h.startswith("x-apiprof")]
    assert kept(http, server.url) == before  # nothing was profiled

    right = http.get(f"{server.url}/api/items/2", headers=AUTH)
    assert right.json() == {"item_id": 2}
    profile_id = right.headers["x-apiprof-profile"]
    url = f"{server.url}/_apiprof/api/profiles/{profile_id}"
    assert http.get(url).status_code == 404  # the profile needs the token too
    doc = fetch(http, server.url, profile_id)
    assert doc["format"] == "apiprof" and doc["meta"]["tool"] == "apiprof trace"
    meta = doc["meta"]
    assert meta["request.route"] == "/api/items/{item_id}" and meta["request.kind"] == "request"
    assert meta["request.path"] == "/api/items/2" and meta["request.status"] == "200"
    assert calls(doc)["get_item"] == 1
    own = os.path.dirname(os.path.abspath(apiprof.__file__)) + os.sep  # nor its own code
    assert not [f for f in doc["functions"] if os.path.abspath(f["file"]).startswith(own)]
    index = kept(http, server.url)
    assert index[0]["id"] == profile_id and index[0]["route"] == "/api/items/{item_id}"
    gz = http.get(url, headers=AUTH)  # kept gzipped, sent as is to clients that accept gzip
    assert gz.headers["content-encoding"] == "gzip"
    assert index[0]["bytes"] == gz.num_bytes_downloaded and gz.json() == doc
    plain = http.get(url, headers={**AUTH, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == doc


def test_on_demand_sync_route_by_query_and_as_the_response(server, http):
    resp = http.get(f"{server.url}/api/sync/5", params={"apiprof": TOKEN})
    assert resp.json() == {"sum": 10}
    doc = fetch(http, server.url, resp.headers["x-apiprof-profile"])
    assert calls(doc)["sync_work"] == 1
    assert [t for t in threads_of(doc, "sync_work") if t != "MainThread"]  # the thread pool

    report = http.get(f"{server.url}/api/sync/7", headers={**AUTH, "X-Apiprof-Report": "json"})
    assert report.status_code == 200 and report.headers["content-type"] == "application/json"
    doc = report.json()  # the profile instead of {"sum": 21}
    assert doc["format"] == "apiprof" and calls(doc)["sync_work"] == 1
    assert doc["meta"]["request.status"] == "200"
    assert doc["meta"]["request.path"] == "/api/sync/7"
    assert fetch(http, server.url, report.headers["x-apiprof-profile"]) == doc


async def _concurrently(url: str, profiled: str, others: list[str]) -> tuple[httpx.Response,
                                                                              list[dict]]:
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
        tasks = [asyncio.create_task(client.get(url + path)) for path in others]
        await asyncio.sleep(0.05)  # the others run first, the profiled one waits for them anyway
        mine = await client.get(url + profiled, headers=AUTH)
        theirs = [(await t).json() for t in tasks]
    return mine, theirs


def test_profile_holds_only_its_own_request(server, http):
    n = 7
    mine, theirs = asyncio.run(_concurrently(server.url, f"/profiled/iso/{n}",
                                             ["/other/iso"] * 3))
    assert mine.json()["calls"] == n
    assert all(t["calls"] > 0 for t in theirs)  # they ran while the profiled request did
    doc = fetch(http, server.url, mine.headers["x-apiprof-profile"])
    got = calls(doc)
    assert got["profiled"] == 1 and got["only_profiled"] == n
    assert "only_others" not in got and "other" not in got  # zero calls from the others
    # the sync dependency ran in the thread pool, in the request's context
    assert got["dependency_in_thread"] == 1 and got["only_in_thread"] == 1
    assert [t for t in threads_of(doc, "dependency_in_thread") if t != "MainThread"]


def test_sync_route_in_the_thread_pool_isolated(server, http):
    n = 5
    mine, theirs = asyncio.run(_concurrently(server.url, f"/sync-profiled/iso/{n}",
                                             ["/sync-other/iso"] * 2))
    assert mine.json() == {"calls": n} and all(t["calls"] > 0 for t in theirs)
    got = calls(fetch(http, server.url, mine.headers["x-apiprof-profile"]))
    assert got["sync_profiled"] == 1 and got["only_in_thread"] == n
    assert "only_others_in_thread" not in got and "sync_other" not in got


def test_slow_capture_keeps_slow_requests_only_and_bounds_the_ring(serve, http):
    server = serve("routes_app:app", cwd=APPS, env=options(
        token=TOKEN, on_demand=False, dashboard=True, slow_ms=100, slow_interval_s=0,
        profiles_per_route=2))

    def capture() -> dict[str, int]:
        return http.get(f"{server.url}/_apiprof/api/stats", headers=AUTH).json()["slow_capture"]

    def get(path: str) -> None:
        resp = http.get(server.url + path)
        assert resp.json() == {"ok": 1} and "x-apiprof-profile" not in resp.headers

    get("/fast")
    assert capture() == {"candidates": 0, "kept": 0}  # nothing slow yet: nothing profiled
    get("/slow")  # seen slow: arms the capture
    get("/fast")  # profiled as the candidate, fast: discarded
    get("/fast")  # not profiled: the capture was disarmed
    assert capture() == {"candidates": 1, "kept": 0} and kept(http, server.url) == []
    get("/slow")  # arms again
    get("/slow")  # profiled and slow: kept (and arms for the next)
    assert capture() == {"candidates": 2, "kept": 1}
    (first,) = kept(http, server.url)
    assert first["route"] == "/slow" and first["kind"] == "slow"
    assert first["wall_ns"] > 100_000_000
    doc = fetch(http, server.url, first["id"])
    assert calls(doc)["slow"] == 1 and calls(doc)["slow_work"] == 1 and "fast" not in calls(doc)
    assert doc["meta"]["request.kind"] == "slow"

    for _ in range(4):
        get("/slow")
    assert capture() == {"candidates": 6, "kept": 5}
    ring = kept(http, server.url)
    assert len(ring) == 2  # profiles_per_route
    assert [p["route"] for p in ring] == ["/slow", "/slow"]
    assert first["id"] not in [p["id"] for p in ring]
    assert http.get(f"{server.url}/_apiprof/api/profiles/{first['id']}",
                    headers=AUTH).status_code == 404  # dropped from the ring
    for p in ring:
        assert calls(fetch(http, server.url, p["id"]))["slow_work"] == 1


def test_profiles_off_by_default(serve, http):
    server = serve("routes_app:app", cwd=APPS, env=options())
    for _ in range(3):
        resp = http.get(f"{server.url}/slow", headers={**AUTH, "X-Apiprof-Report": "json"})
        assert resp.json() == {"ok": 1}
        assert not [h for h in resp.headers if h.startswith("x-apiprof")]
    assert http.get(f"{server.url}/_apiprof/api/profiles/1-1", headers=AUTH).status_code == 404


def test_captured_profile_is_a_report_in_every_format(server, http, tmp_path):
    """A kept profile opens as the HTML report (X-Apiprof-Report: html, and the
    dashboard's link), and its JSON document is read by every apiprof report format."""
    import subprocess
    import sys
    from pathlib import Path

    page = http.get(f"{server.url}/api/items/9", headers={**AUTH, "X-Apiprof-Report": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html>") and "get_item" in page.text
    profile_id = page.headers["x-apiprof-profile"]
    doc = http.get(f"{server.url}/_apiprof/api/profiles/{profile_id}", headers=AUTH)
    assert doc.json()["meta"]["request.path"] == "/api/items/9"
    saved = tmp_path / "captured.json"
    saved.write_bytes(doc.content)
    apiprof = Path(sys.executable).with_name("apiprof")
    for fmt in ("html", "svg", "dot", "speedscope", "pprof", "collapsed", "callgrind", "text",
                "json", "pstats"):
        out = tmp_path / f"out.{fmt}"
        r = subprocess.run([str(apiprof), "report", str(saved), "-f", fmt, "-o", str(out)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and out.stat().st_size > 0, (fmt, r.stderr)
    assert (tmp_path / "out.text").read_text().startswith(f"apiprof: {saved} (clock: wall)")
    assert calls(json.loads((tmp_path / "out.json").read_text()))["get_item"] == 1
    assert json.loads((tmp_path / "out.json").read_text())["threads"] == doc.json()["threads"]
    # the dashboard's page of it; an unknown id is a 404
    html = http.get(f"{server.url}/_apiprof/api/profiles/{profile_id}/html", headers=AUTH)
    assert html.status_code == 200 and "get_item" in html.text
    assert http.get(f"{server.url}/_apiprof/api/profiles/0-0/html",
                    headers=AUTH).status_code == 404
