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
    env = {"APIPROF_TEST_OPTIONS": json.dumps(
        {"token": TOKEN, "on_demand": False, "dashboard": True})}
    server = serve("routes_app:app", cwd=APPS, env=env)
    for i in range(6):
        http.get(f"{server.url}/api/items/{i}")
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

    by_p95 = dump_dom(f"{server.url}/_apiprof?apiprof={TOKEN}&sort=p95", tmp_path / "c2")
    assert 'data-sort="p95"' in by_p95
    assert route_rows(by_p95)[0][0] == "/sleep"  # 50 ms, far above the others

    denied = dump_dom(f"{server.url}/_apiprof?apiprof=wrong-token", tmp_path / "c3")
    assert "Not Found" in denied and "apiprof: routes" not in denied
