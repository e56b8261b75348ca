"""The dashboard page rendered by headless Chromium (Debian package `chromium`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from helpers import REPO_ROOT

APPS = REPO_ROOT / "tests" / "py" / "apps"
TOKEN = "dashboard-token-0123456789abcdef"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url: str, profile_dir) -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make system-deps`", pytrace=False)
    # the browser is not under test: keep a sanitizer run's LD_PRELOAD away from it
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONMALLOC")}
    r = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile_dir}", "--virtual-time-budget=3000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90, env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def route_rows(dom: str) -> list[list[str]]:
    body = dom.split('<table id="routes">')[1].split("</tbody>")[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("<tbody>")[1], re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]


def test_dashboard_in_chromium(serve, http, tmp_path):
    env = {"APIPROF_TEST_OPTIONS": json.dumps({"token": TOKEN, "dashboard": True})}
    server = serve("routes_app:app", cwd=APPS, env=env)
    for i in range(5):
        http.get(f"{server.url}/api/items/{i}")
    profile_id = http.get(f"{server.url}/api/items/5",
                          headers={"X-Apiprof-Token": TOKEN}).headers["x-apiprof-profile"]
    http.get(f"{server.url}/sleep")
    for n in range(3):
        http.get(f"{server.url}/api/sync/{n}")

    by_count = dump_dom(f"{server.url}/_apiprof?apiprof={TOKEN}&sort=count", tmp_path / "c1")
    rows = route_rows(by_count)
    assert 'data-sort="count"' in by_count
    assert [r[0] for r in rows[:2]] == ["/api/items/{item_id}", "/api/sync/{n}"]
    assert rows[0][1:4] == ["GET", "2xx", "6"] and rows[1][1:4] == ["GET", "2xx", "3"]
    total = sum(int(r[3]) for r in rows)  # 10 + the harness's health check(s)
    assert total >= 11 and f"{total} requests, {len(rows)} rows, 1 worker(s)" in by_count

    # the captured profile is linked from its route's row and from the profiles table,
    # to its HTML report; the profiles table also links its JSON document
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', by_count)
    assert [text for _, text in links] == [profile_id, profile_id, "json"]
    html_href = links[0][0].replace("&amp;", "&")
    assert html_href == f"/_apiprof/api/profiles/{profile_id}/html?apiprof={TOKEN}"
    assert links[1][0] == links[0][0]
    href = links[2][0].replace("&amp;", "&")
    assert href == f"/_apiprof/api/profiles/{profile_id}?apiprof={TOKEN}"
    doc = http.get(server.url + href).json()
    assert doc["meta"]["request.path"] == "/api/items/5"
    assert {f["qualname"]: f["calls"] for f in doc["functions"]}["get_item"] == 1
    assert rows[0][-1].startswith("<a href=")  # in the /api/items/{item_id} row
    # the HTML report of the profile: apiprof report's page, rendered by the browser
    page = http.get(server.url + html_href)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "GET /api/items/5 -&gt; 200" in page.text or "GET /api/items/5 -> 200" in page.text
    report_dom = dump_dom(server.url + html_href, tmp_path / "c0")
    assert "get_item" in report_dom and "Function" in report_dom
    assert http.get(server.url + html_href.replace("/html?", "/nope/html?")).status_code == 404

    by_p95 = dump_dom(f"{server.url}/_apiprof?apiprof={TOKEN}&sort=p95", tmp_path / "c2")
    assert 'data-sort="p95"' in by_p95
    p95_rows = route_rows(by_p95)
    p95 = [float(r[7]) for r in p95_rows]  # columns: route, method, status, count, errors,
    assert p95 == sorted(p95, reverse=True)  # p50, p90, p95, ...
    # a 50 ms asyncio.sleep: the loop may run its timer a hair early (its clock
    # resolution) and a histogram bucket is within 0.4%, so 49 ms is the floor
    assert {r[0]: float(r[7]) for r in p95_rows}["/sleep"] >= 49.0

    denied = dump_dom(f"{server.url}/_apiprof?apiprof=wrong-token", tmp_path / "c3")
    assert "Not Found" in denied and "apiprof: routes" not in denied
