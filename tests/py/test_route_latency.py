"""Per-route request latency in the profile: `apiprof run -m uvicorn` times every request
of a labelled route into that route's histogram (docs/format.md, RLAT). Routes of known
latency under real uvicorn: exact counts, percentiles within what the histogram and the
clock allow, the order of the routes, and the same figures in every place that shows them
(the JSON export and its read-back, the text report, the findings, the HTML Overview)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import serve_profiled

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
READY = "document.body && document.body.dataset.ready === '1'"
PRECISION = 0.004   # a percentile is its bucket's midpoint: within 0.4% (ap_hist.h)
CPU, WAITS = 10, 6  # requests per /cpuN route, and to /wait
WAIT_NS = 400_000_000
CPU_NS = 5_000_000


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("latency")
    out = d / "lat.apiprof"
    port = free_port()

    def drive(client: httpx.Client) -> None:
        for _ in range(CPU):
            for r in ("/cpu1", "/cpu2", "/cpu3"):
                assert client.get(r).status_code == 200
        for _ in range(WAITS):
            assert client.get("/wait").status_code == 200
        for _ in range(2):
            assert client.get("/health").status_code == 200
    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn",
                    "latency_app:app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"], APPS, {}, port, d / "server.log", drive)
    return out


def within(value: int, low: float, high: float) -> bool:
    return low * (1 - PRECISION) <= value <= high * (1 + PRECISION)


def test_counts_and_percentiles_of_each_route(profile):
    routes = {r["route"]: r for r in _core.load(str(profile)).routes()}
    assert set(routes) == {"GET /health", "GET /cpu1", "GET /cpu2", "GET /cpu3", "GET /wait"}
    # wait_healthy's one request and the two of drive(): counted exactly, once each
    assert routes["GET /health"]["latency"]["count"] == routes["GET /health"]["requests"] == 3
    for r in ("GET /cpu1", "GET /cpu2", "GET /cpu3"):
        lat = routes[r]["latency"]
        assert lat["count"] == routes[r]["requests"] == CPU
        # at least the 5 ms of CPU (thread CPU <= wall), under the await
        assert within(lat["p50_ns"], CPU_NS, WAIT_NS), lat
        assert lat["min_ns"] <= lat["p50_ns"] <= lat["p95_ns"] <= lat["p99_ns"] <= lat["max_ns"]
    w = routes["GET /wait"]["latency"]
    assert w["count"] == routes["GET /wait"]["requests"] == WAITS
    # asyncio.sleep may fire up to the clock's resolution early: 1 ms of slack below
    assert within(w["p50_ns"], WAIT_NS - 1_000_000, 3 * WAIT_NS), w
    assert w["p95_ns"] == w["p99_ns"] and within(w["max_ns"], w["p95_ns"], w["p95_ns"])
    # ordering: /wait is the slowest by p95, the CPU routes have more work
    by_p95 = sorted(routes.values(), key=lambda r: -r["latency"]["p95_ns"])
    assert by_p95[0]["route"] == "GET /wait"


def test_json_export_reads_back_the_same_histograms(profile, tmp_path):
    out = tmp_path / "lat.json"
    r = subprocess.run([str(APIPROF), "report", str(profile), "-f", "json", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    native = {r["route"]: r["latency"] for r in _core.load(str(profile)).routes()}
    exported = {r["route"]: r["latency"] for r in doc["routes"]}
    assert set(exported) == set(native)
    for route, lat in exported.items():
        assert {k: lat[k] for k in ("count", "p50_ns", "p95_ns", "p99_ns", "max_ns")} == {
            k: native[route][k] for k in ("count", "p50_ns", "p95_ns", "p99_ns", "max_ns")}
    again = {r["route"]: r["latency"] for r in _core.load(str(out)).routes()}
    assert again == native


def test_text_report_and_findings(profile):
    r = subprocess.run([str(APIPROF), "report", str(profile)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    table = r.stdout[r.stdout.index("routes (latency"):r.stdout.index("ncalls")]
    rows = [line.split() for line in table.splitlines()[2:] if line.startswith("GET")]
    assert [row[1] for row in rows][0] == "/wait"          # slowest p95 first
    assert rows[0][2] == str(WAITS)
    assert {row[1]: row[2] for row in rows} == {"/health": "3", "/cpu1": str(CPU),
                                                "/cpu2": str(CPU), "/cpu3": str(CPU),
                                                "/wait": str(WAITS)}
    findings = _core.load(str(profile)).findings()
    # said once: a finding of its own, or within /wait's slow-route finding when its work
    # makes it one (the work of an await differs by Python version), never both
    said = [f for f in findings if "p95" in f["message"]]
    assert len(said) == 1 and said[0]["route"] == "GET /wait", said
    if said[0]["kind"] == "slow_latency":
        assert said[0]["count"] == WAITS
        assert within(said[0]["value"], WAIT_NS - 1_000_000, 3 * WAIT_NS)
    else:
        assert said[0]["kind"] == "slow_route"
        assert "the slowest route by p95 latency" in said[0]["message"]


def test_html_overview_route_table(profile, tmp_path):
    from cdp import Browser
    html = tmp_path / "lat.html"
    r = subprocess.run([str(APIPROF), "report", str(profile), "-o", str(html)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    native = {r["route"]: r["latency"] for r in _core.load(str(profile)).routes()}
    with Browser(tmp_path / "chromium") as browser:
        page = browser.open(html.as_uri())
        page.wait_for(READY)
        assert page.errors == []
        head = page.eval("Array.from(document.querySelectorAll('#routes th'))"
                         ".map(function (th) { return th.textContent; })")
        assert head[:5] == ["route", "requests", "p50", "p95", "p99"]
        rows = page.eval("Array.from(document.querySelectorAll('#routes tr[data-route]'))"
                         ".map(function (tr) { return [tr.dataset.route, "
                         "tr.children[1].textContent, tr.children[3].textContent]; })")
        lat = page.eval("JSON.parse(document.getElementById('apiprof-data').textContent)"
                        ".routes.map(function (r) { return [r.route, r.latency.p95_ns]; })")
    assert {route: p95 for route, p95 in lat} == {k: v["p95_ns"] for k, v in native.items()}
    counts = {route: int(n) for route, n, _ in rows}
    assert counts == {"GET /health": 3, "GET /cpu1": CPU, "GET /cpu2": CPU, "GET /cpu3": CPU,
                      "GET /wait": WAITS}
    wait_p95 = next(p95 for route, _, p95 in rows if route == "GET /wait")
    assert wait_p95.endswith(" ms") and float(wait_p95[:-3]) >= 399
