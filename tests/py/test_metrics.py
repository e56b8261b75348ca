"""Prometheus metrics of the middleware, scraped by a real Prometheus server (Debian's
``prometheus``, started here on 127.0.0.1): exact request counts merged over two uvicorn
workers, histogram_quantile against apiprof's own p95, the bearer token, the opt-in."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiprof.asgi import ProfilerMiddleware, stats
from apiprof.asgi.metrics import DEFAULT_BUCKETS_S, bearer_ok
from apiprof.errors import ConfigurationError
from conftest import free_port
from helpers import REPO_ROOT

APPS = REPO_ROOT / "tests" / "py" / "apps"
PROMETHEUS = shutil.which("prometheus")
TOKEN = "scrape-token-0123456789abcdef"
# a quote, a backslash and a newline: Prometheus must read them back unchanged
SERVICE = 'shop "east"\\1\nb'
# what the test sends: fast and slow requests of one route, and errors
FAST, SLOW, BOOM = 38, 10, 3


@pytest.fixture(scope="module")
def stack(serve_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary (Debian's `prometheus`; `make system-deps` installs it)")
    # Prometheus starts while uvicorn does, scraping the metrics port (known up front)
    stats_dir = tmp_path_factory.mktemp("stats")
    port = free_port()
    work = tmp_path_factory.mktemp("prometheus")
    prom_port = free_port()
    config = work / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "app", "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials": TOKEN},
            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        }],
    }))
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        server = serve_module("metrics_app:app", cwd=APPS, args=("--workers", "2"), env={
            "APIPROF_STATS_DIR": str(stats_dir), "APIPROF_METRICS_PATH": "/metrics",
            "APIPROF_METRICS_TOKEN": TOKEN, "APIPROF_METRICS_PORT": str(port),
            "APIPROF_SERVICE": SERVICE})
        prom = f"http://127.0.0.1:{prom_port}"
        _until(lambda: _get(f"{prom}/-/ready") == 200, "prometheus ready", work)
        yield {"app": server.url, "prom": prom, "port": port, "stats_dir": stats_dir,
               "work": work}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return 0


def _until(ok: Any, what: str, work: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            log = (work / "prometheus.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"timed out waiting for {what}; prometheus log:\n{log}")
        time.sleep(0.1)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}"
    body = httpx.get(url, timeout=5, trust_env=False).json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def scalar(prom: str, expr: str) -> float | None:
    result = query(prom, expr)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def driven(stack: dict[str, Any]) -> dict[str, Any]:
    """Sends the known requests (new connections, so both workers serve some) and waits
    until Prometheus has scraped both workers' final figures."""
    paths = ["/sleep/2"] * FAST + ["/sleep/80"] * SLOW + ["/boom"] * BOOM

    def one(path: str) -> int:
        r = httpx.get(stack["app"] + path, headers={"connection": "close"}, timeout=10,
                      trust_env=False)
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(one, paths))
    assert codes.count(200) == FAST + SLOW and codes.count(500) == BOOM
    prom, route = stack["prom"], 'route="/sleep/{ms}"'
    _until(lambda: scalar(prom, f"sum(apiprof_requests_total{{{route}}})") == FAST + SLOW
           and scalar(prom, "max(apiprof_workers)") == 2, "the counts scraped", stack["work"])
    # one scrape more: the totals stay where they are (no worker counted twice)
    seen = scalar(prom, "max(timestamp(apiprof_workers))")
    _until(lambda: scalar(prom, "max(timestamp(apiprof_workers))") != seen, "one more scrape",
           stack["work"])
    return stack


def test_request_count_is_exact_across_two_workers(driven: dict[str, Any]) -> None:
    prom = driven["prom"]
    assert scalar(prom, 'sum(apiprof_requests_total{route="/sleep/{ms}"})') == FAST + SLOW
    assert scalar(prom, 'sum(apiprof_requests_total{route="/boom",status="5xx"})') == BOOM
    assert scalar(prom, 'sum(apiprof_request_errors_total{route="/boom"})') == BOOM
    assert scalar(prom, 'sum(apiprof_request_errors_total{route="/sleep/{ms}"})') == 0
    assert scalar(prom, "max(apiprof_workers)") == 2
    # the worker files in the directory say the same
    merged = {r["route"]: r["count"] for r in stats(driven["stats_dir"])["routes"]
              if r["status"] == "2xx"}
    assert merged["/sleep/{ms}"] == FAST + SLOW
    # label values with a quote, a backslash and a newline came through the format intact
    services = {r["metric"].get("service") for r in query(prom, "apiprof_requests_total")}
    assert services == {SERVICE}


def test_histogram_quantile_agrees_with_apiprofs_p95(driven: dict[str, Any]) -> None:
    prom = driven["prom"]
    q = scalar(prom, 'histogram_quantile(0.95, sum by (le) '
                     '(apiprof_request_duration_seconds_bucket{route="/sleep/{ms}"}))')
    assert q is not None and math.isfinite(q)
    row = next(r for r in stats(driven["stats_dir"])["routes"]
               if r["route"] == "/sleep/{ms}" and r["status"] == "2xx")
    own = row["p95_ns"] / 1e9
    assert own >= 0.08  # the slow requests are the top 10 of 48
    # the bucket that holds apiprof's p95; Prometheus interpolates inside it
    bounds = (0.0, *DEFAULT_BUCKETS_S)
    hi = next(i for i, b in enumerate(bounds) if b >= own)
    assert bounds[hi - 1] <= q <= bounds[hi], (q, own)
    cpu = scalar(prom, 'sum(apiprof_request_cpu_seconds_total{route="/sleep/{ms}"})')
    wait = scalar(prom, 'sum(apiprof_request_wait_seconds_total{route="/sleep/{ms}"})')
    total = scalar(prom, 'sum(apiprof_request_duration_seconds_sum{route="/sleep/{ms}"})')
    assert cpu is not None and wait is not None and total is not None
    assert wait >= SLOW * 0.08 + FAST * 0.002  # the sleeps are waits
    assert abs(cpu + wait - total) < 1e-6


def test_token_is_required(driven: dict[str, Any]) -> None:
    for url in (f"{driven['app']}/metrics", f"http://127.0.0.1:{driven['port']}/metrics"):
        assert httpx.get(url, trust_env=False).status_code == 401
        bad = {"authorization": f"Bearer {TOKEN[:-1]}x"}
        assert httpx.get(url, headers=bad, trust_env=False).status_code == 401
        basic = {"authorization": f"Basic {TOKEN}"}
        assert httpx.get(url, headers=basic, trust_env=False).status_code == 401
        good = httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}, trust_env=False)
        assert good.status_code == 200
        assert good.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "apiprof_request_duration_seconds_bucket{" in good.text
    # the separate port serves nothing else
    other = f"http://127.0.0.1:{driven['port']}/sleep/1"
    assert httpx.get(other, headers={"authorization": f"Bearer {TOKEN}"},
                     trust_env=False).status_code == 404


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]] = []) -> int:  # noqa: B006
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": headers, "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "http_version": "1.1",
             "asgi": {"version": "3.0"}}
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"app 404"})


def test_metrics_are_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("APIPROF_METRICS_PATH", "APIPROF_METRICS_PORT", "APIPROF_METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
    off = ProfilerMiddleware(_not_found, token=TOKEN)
    assert asyncio.run(_call(off, "/metrics", auth)) == 404  # the app's own answer
    on = ProfilerMiddleware(_not_found, metrics_path="/metrics", metrics_token=TOKEN)
    assert asyncio.run(_call(on, "/metrics", auth)) == 200
    assert asyncio.run(_call(on, "/metrics")) == 401
    monkeypatch.setenv("APIPROF_METRICS_PATH", "/m")
    monkeypatch.setenv("APIPROF_METRICS_TOKEN", TOKEN)
    env_on = ProfilerMiddleware(_not_found)
    assert asyncio.run(_call(env_on, "/m", auth)) == 200
    assert asyncio.run(_call(env_on, "/metrics", auth)) == 404


def test_metrics_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="metrics need a token"):
        ProfilerMiddleware(_not_found, metrics_path="/metrics")
    with pytest.raises(ConfigurationError, match="metrics need a token"):
        ProfilerMiddleware(_not_found, metrics_port=9100, metrics_token="short")
    with pytest.raises(ConfigurationError, match="metrics_path"):
        ProfilerMiddleware(_not_found, metrics_path="metrics", metrics_token=TOKEN)
    with pytest.raises(ConfigurationError, match="metrics_buckets"):
        ProfilerMiddleware(_not_found, metrics_path="/m", metrics_token=TOKEN,
                           metrics_buckets=(0.5, 0.1))
    # the profile token serves as the metrics token when none is given
    assert ProfilerMiddleware(_not_found, token=TOKEN, metrics_path="/m")._metrics is not None


def test_bearer_check() -> None:
    token = TOKEN.encode()
    assert bearer_ok(b"Bearer " + token, token) and bearer_ok(b"bearer " + token, token)
    assert not bearer_ok(None, token) and not bearer_ok(token, token)
    assert not bearer_ok(b"Bearer " + token[:-1], token)
    assert not bearer_ok(b"Token " + token, token)


async def _sleeper(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(0.03)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"slept"})


def test_profiled_requests_split_waits_by_kind() -> None:
    mw = ProfilerMiddleware(_sleeper, token=TOKEN, metrics_path="/metrics")
    auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
    profiled = [(b"x-apiprof-token", TOKEN.encode())]
    assert asyncio.run(_call(mw, "/nap-profiled", profiled)) == 200
    assert asyncio.run(_call(mw, "/nap-profiled")) == 200  # not profiled: unclassified
    sent: list[dict[str, Any]] = []

    async def grab(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scrape() -> None:
        await mw._metrics.serve({"type": "http", "path": "/metrics", "headers": auth}, grab)  # type: ignore[union-attr]

    asyncio.run(scrape())
    text = sent[1]["body"].decode()
    rows = {}
    for line in text.splitlines():
        m = re.match(r'apiprof_request_(wait_seconds_total|waits_measured_total)\{.*'
                     r'route="<unmatched>",method="GET",status="2xx"(?:,kind="(\w+)")?\} (\S+)$',
                     line)
        if m:
            rows[(m.group(1), m.group(2))] = float(m.group(3))
    # the profiled request's 30 ms sleep is a sleep wait; the other's is unclassified
    assert rows[("waits_measured_total", None)] >= 1
    assert rows[("wait_seconds_total", "sleep")] >= 0.029
    assert rows[("wait_seconds_total", "unclassified")] >= 0.029
