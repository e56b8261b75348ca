"""Findings (src/core/ap_findings.c) on apps with planted problems under real uvicorn: the
shop's blocking login, hot recommendation line, upstream wait; a healthy app yields no
blocking or waiting finding; the formats that carry them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import REPO_ROOT, SHOP_DIR, serve_profiled

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = REPO_ROOT / "tests" / "py" / "apps"


def serve(tmp_path: Path, app: str, cwd: Path, drive) -> Path:
    """`apiprof run -m uvicorn app` on a free port, drive(client), SIGINT; the profile."""
    port = free_port()
    out = tmp_path / "app.apiprof"
    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn", app, "--host",
                    "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   cwd, {"SHOP_DB": str(tmp_path / "shop.db")}, port, tmp_path / "server.log",
                   drive)
    return out


def drive_shop(client: httpx.Client) -> None:
    for _ in range(3):
        r = client.post("/login", json={"email": "alice@example.com",
                                        "password": "correct horse battery staple"})
        assert r.status_code == 200
    for pid in (1, 2, 3, 4, 5):
        assert client.get(f"/products/{pid}/recommendations", params={"k": 5}).status_code == 200
    for pid in (1, 2):
        assert client.get(f"/products/{pid}/shipping", params={"zone": "eu"}).status_code == 200
    for _ in range(20):
        assert client.get("/health").status_code == 200
    for pid in range(1, 11):
        assert client.get(f"/products/{pid}").status_code == 200
    for _ in range(3):
        assert client.get("/orders/recent", params={"limit": 20}).status_code == 200
    assert client.get("/export/orders.csv").status_code == 200


@pytest.fixture(scope="module")
def shop_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serve(tmp_path_factory.mktemp("shop"), "shop.app:app", SHOP_DIR, drive_shop)


def by_kind(findings: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in findings:
        out.setdefault(f["kind"], []).append(f)
    return out


def test_shop_findings_name_the_planted_problems(shop_profile: Path):
    findings = _core.load(str(shop_profile)).findings()
    kinds = by_kind(findings)
    # POST /login: a blocking call on the event loop, named with the user function that
    # made it (hashlib's PBKDF2 through shop/db.py's hash_password).
    (block,) = [f for f in kinds["blocking_call"] if f["route"] == "POST /login"]
    assert block["function"].endswith("pbkdf2_hmac") and block["count"] == 3
    assert "hash_password (shop/db.py:" in block["message"]
    assert block["severity"] == "high"
    # The recommendations route: its hot function is the similarity loop of
    # shop/recommend.py, with the hot path from the handler, and 5 requests counted.
    (hot,) = [f for f in kinds["hot_function"]
              if f["route"] == "GET /products/{product_id}/recommendations"]
    assert hot["file"].endswith("shop/recommend.py") and hot["function"].startswith("similar")
    assert hot["path"][0] == "recommendations" and hot["count"] == 5
    # The shipping route waits on the upstream call it makes.
    (wait,) = [f for f in kinds["await_bound"]
               if f["route"] == "GET /products/{product_id}/shipping"]
    assert wait["function"] == "AsyncClient.get" and "called from shipping" in wait["message"]
    # GET /orders/recent: N+1 queries, 1 + 2 x 20 per request, from load_order in a loop.
    (n1,) = kinds["repeated_query"]
    assert n1["route"] == "GET /orders/recent" and n1["function"] == "load_order"
    assert n1["value"] >= 41 * 3 and n1["count"] == 3 and n1["unit"] == "calls"
    assert "called 20.0 times per request by recent_orders" in n1["message"]
    # GET /export/orders.csv: one thread-pool hop per CSV row.
    (hops,) = kinds["pool_hops"]
    assert hops["route"] == "GET /export/orders.csv" and hops["value"] >= 100
    # Healthy routes: no blocking and no waiting finding.
    flagged = {f["route"] for f in kinds.get("blocking_call", []) + kinds.get("await_bound", [])
               + kinds.get("repeated_query", []) + kinds.get("pool_hops", [])}
    assert not flagged & {"GET /health", "GET /products/{product_id}"}
    # Ranked: high before medium before info; idle time is stated, last.
    order = {"high": 0, "medium": 1, "info": 2}
    assert [order[f["severity"]] for f in findings] == sorted(order[f["severity"]]
                                                              for f in findings)
    assert kinds["idle"][0] is findings[-1] and 0 < kinds["idle"][0]["share"] < 1


def test_findings_in_every_text_and_json_output(shop_profile: Path):
    r = subprocess.run([str(APIPROF), "report", str(shop_profile), "--format", "findings"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("findings (") and "blocking call: POST /login" in r.stdout
    doc = json.loads(subprocess.run([str(APIPROF), "report", str(shop_profile), "-f", "json"],
                                    capture_output=True, text=True, check=True).stdout)
    keys = {"kind", "severity", "route", "function", "file", "line", "value", "unit",
            "message"}
    assert doc["findings"] and all(keys <= f.keys() for f in doc["findings"])
    assert [f["message"] for f in doc["findings"]] == [
        f["message"] for f in _core.load(str(shop_profile)).findings()]
    # The text report leads with them, then lists the app's own functions only.
    text = subprocess.run([str(APIPROF), "report", str(shop_profile)], capture_output=True,
                          text=True, check=True).stdout
    assert text.index("findings (") < text.index("ncalls")
    table = text[text.index("ncalls"):]
    assert "shop/recommend.py" in table and "WorkerThread.run" not in table
    assert "library and idle-waiting functions not listed" in text
    everything = subprocess.run([str(APIPROF), "report", str(shop_profile), "--all",
                                 "--limit", "0"], capture_output=True, text=True,
                                check=True).stdout
    assert "WorkerThread.run" in everything


def drive_healthy(client: httpx.Client) -> None:
    for i in range(10):
        assert client.get(f"/items/{i}").status_code == 200
        assert client.get("/sync/3").status_code == 200
        assert client.get("/health").status_code == 200
    assert client.get("/spawn").status_code == 200


def test_healthy_app_has_no_blocking_or_waiting_finding(tmp_path: Path):
    out = serve(tmp_path, "label_app:app", APPS, drive_healthy)
    findings = _core.load(str(out)).findings()
    assert {f["kind"] for f in findings} & {"blocking_call", "await_bound", "repeated_query",
                                            "pool_hops"} == set()
    slow = [f for f in findings if f["kind"] == "slow_route"]
    assert slow and all(f["count"] >= 1 for f in slow)
    assert {f["route"]: f["count"] for f in slow}.get("GET /items/{item_id}", 10) == 10


def test_findings_of_a_profile_without_routes(tmp_path: Path):
    script = tmp_path / "work.py"
    script.write_text("def inner():\n    return sum(range(200000))\n\n"
                      "def outer():\n    for _ in range(20):\n        inner()\n\nouter()\n")
    out = tmp_path / "work.apiprof"
    r = subprocess.run([str(APIPROF), "run", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.index("findings (") < r.stderr.index("ncalls")   # the exit summary
    (hot,) = [f for f in _core.load(str(out)).findings() if f["kind"] == "hot_function"]
    assert hot["function"] == "inner" and hot["route"] is None
    assert hot["path"] == ["<module>", "outer", "inner"]


READY = "document.body && document.body.dataset.ready === '1'"
ARTIFACTS = REPO_ROOT / ".artifacts" / "report"


def test_html_opens_on_findings_hides_idle_folds_libraries(shop_profile: Path, tmp_path: Path):
    from cdp import Browser

    html = tmp_path / "shop.html"
    subprocess.run([str(APIPROF), "report", str(shop_profile), "-o", str(html)], check=True,
                   capture_output=True, timeout=120)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Browser(tmp_path / "chromium", width=1400, height=1000) as browser:
        page = browser.open(html.as_uri())
        page.wait_for(READY)
        assert page.errors == [] and page.eval("window.apiprofErrors") == []
        # The first screen: the findings, the slow route's hot function and the blocking call.
        assert page.eval("window.apiprof.state.view") == "overview"
        text = page.eval("document.getElementById('overview').textContent")
        assert "blocking call: POST /login blocks the event loop" in text
        assert "shop/recommend.py:" in text
        routes = page.eval("Array.from(document.querySelectorAll('#routes tr[data-route]'))"
                           ".map(r => [r.dataset.route, r.cells[1].textContent])")
        assert ["GET /products/{product_id}/recommendations", "5"] in routes
        page.screenshot(ARTIFACTS / "overview.png")
        # Idle waiting is left out of the views by default, and said how much.
        shown = page.eval("window.apiprof.view().total")
        hidden = page.eval("window.apiprof.view().hiddenIdle")
        assert hidden > 0 and shown > 0
        page.eval("document.getElementById('show-idle').click()")
        assert page.eval("window.apiprof.view().total") == shown + hidden
        page.eval("document.getElementById('show-idle').click()")
        # Library frames fold into one labelled frame per run; unfolding shows them.
        folded_nodes = page.eval("window.apiprof.view().n")
        assert page.eval("Array.from(window.apiprof.view().folded).some(x => x > 0)")
        page.eval("document.getElementById('fold-lib').click()")
        assert page.eval("window.apiprof.view().n") > folded_nodes
        page.eval("document.getElementById('fold-lib').click()")
        # A route row opens that route's own flame graph; the URL keeps the view.
        page.eval("document.querySelector(\"#routes tr[data-route='POST /login']\").click()")
        assert page.eval("window.apiprof.state.view") == "flame"
        assert page.eval("window.apiprof.state.filters.route") == "POST /login"
        assert "route=POST%20%2Flogin" in page.eval("location.hash")
        page.screenshot(ARTIFACTS / "route-flame.png")
        # The evidence of the blocking call: the call tree of that route, searched for it.
        page.eval("window.apiprof.show('overview')")
        page.eval("""Array.from(document.querySelectorAll('#findings li')).find(li =>
            li.textContent.includes('blocks the event loop')).querySelector('a.ev').click()""")
        assert page.eval("window.apiprof.state.view") == "tree"
        assert page.eval("window.apiprof.state.matches") >= 1
        link = page.eval("location.href")
        # A link opens the same view.
        other = browser.open(link)
        other.wait_for(READY)
        assert other.eval("window.apiprof.state.view") == "tree"
        assert other.eval("document.getElementById('filter-route').value") == "POST /login"
        assert other.errors == []
