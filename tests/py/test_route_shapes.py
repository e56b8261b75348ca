"""Route templates for every routing shape (tests/py/apps/shapes_app.py), in every place a
route is named: the middleware's statistics, ``apiprof bench --app`` and the tracer's
labels, against the installed FastAPI and the oldest one apiprof supports (FASTAPI_FLOOR,
in a venv of its own under build/, made on first use and kept)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import venv
from pathlib import Path

import apiprof
import httpx
import pytest
import websockets
from apiprof._labels import RouteFinder
from apiprof._route_match import map_paths
from conftest import free_port
from helpers import REPO_ROOT, serve_profiled

APPS = REPO_ROOT / "tests" / "py" / "apps"
# The oldest FastAPI apiprof supports (docs/asgi.md, pyproject.toml's fastapi extra).
FASTAPI_FLOOR = "0.100.0"
FLOOR_PACKAGES = [f"fastapi=={FASTAPI_FLOOR}", "uvicorn==0.23.2"]
TENANTS = 300  # more than the middleware's 256-row table

sys.path.insert(0, str(APPS))
import shapes_app  # noqa: E402


def floor_python() -> str:
    """A Python with FastAPI FASTAPI_FLOOR and this apiprof (the installed package, linked
    by a .pth file, so the same build runs)."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    home = REPO_ROOT / "build" / f"fastapi-{FASTAPI_FLOOR}-py{ver}"
    python = home / "bin" / "python"
    marker = home / ".installed"
    if (marker.read_text() if marker.exists() else "") != " ".join(FLOOR_PACKAGES):
        venv.EnvBuilder(clear=True, with_pip=True).create(home)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *FLOOR_PACKAGES],
                       check=True, timeout=600)
        marker.write_text(" ".join(FLOOR_PACKAGES))
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    link_dir = home / "apiprof-link"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "apiprof"
    package = Path(apiprof.__file__).parent
    if not link.is_symlink() or link.resolve() != package.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(package)
    (Path(site.stdout.strip()) / "apiprof-link.pth").write_text(str(link_dir) + "\n")
    return str(python)


@pytest.fixture(scope="module", params=["installed", "floor"])
def python(request: pytest.FixtureRequest) -> str:
    return sys.executable if request.param == "installed" else floor_python()


def run_python(python: str, code: str) -> object:
    done = subprocess.run([python, "-c", code], cwd=APPS, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_floor_venv_has_the_floor_fastapi(python):
    version = run_python(python, "import fastapi, json; print(json.dumps(fastapi.__version__))")
    if python != sys.executable:
        assert version == FASTAPI_FLOOR


LOOKUP = """
import json, shapes_app
from apiprof._labels import RouteFinder
from apiprof._route_match import map_paths
found = map_paths(shapes_app.app, [(m, p) for m, p, _ in shapes_app.EXPECTED])
finder = RouteFinder(shapes_app.app)
ws = [finder.template({"type": "websocket", "path": p, "root_path": "", "headers": [],
                       "query_string": b""}) for p, _ in shapes_app.WS_EXPECTED]
print(json.dumps({"http": [f["route"] for f in found], "ws": ws}))
"""


def test_one_lookup_names_every_shape(python):
    got = run_python(python, LOOKUP)
    assert got == {"http": [t for _, _, t in shapes_app.EXPECTED],
                   "ws": [t for _, t in shapes_app.WS_EXPECTED]}


def test_tracer_labels_websockets_and_mounts_in_process():
    finder = RouteFinder(shapes_app.app)
    scope = {"type": "http", "method": "GET", "path": "/t/acme/orders/7", "root_path": "",
             "headers": [], "query_string": b""}
    assert finder.template(scope) == "/t/{tenant}/orders/{order_id}"
    assert finder.template({**scope, "path": "/t/other/orders/9"}) == (
        "/t/{tenant}/orders/{order_id}")
    assert finder.template({**scope, "path": "/nope"}) is None
    found = map_paths(shapes_app.app, [("DELETE", "/api/v1/items/3")])
    assert found == [{"route": "/api/v1/items/{item_id}", "endpoint": None}]  # 405


def test_middleware_keys_every_shape_by_its_full_template(python, serve, http):
    server = serve("shapes_app:app", cwd=APPS, env={"APIPROF_TEST_STATS": "1"},
                   health="/health", python=python)
    for method, path, _ in shapes_app.EXPECTED:
        assert http.request(method, server.url + path).status_code == 200, path
    for i in range(TENANTS):
        assert http.get(f"{server.url}/t/tenant{i}/orders/{i}").status_code == 200
    routes = {(r["route"], r["method"]): r["count"]
              for r in http.get(server.url + "/_stats").json()["routes"]}
    want: dict[tuple[str, str], int] = {}
    for method, _, template in shapes_app.EXPECTED:
        want[(template, method)] = want.get((template, method), 0) + 1
    want[("/t/{tenant}/orders/{order_id}", "GET")] += TENANTS
    want[("/health", "GET")] = routes.get(("/health", "GET"), 0)  # + the readiness polls
    assert routes == want


def test_bench_app_names_every_shape(python, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{m} {p}\n" for m, p, _ in shapes_app.EXPECTED))
    out = tmp_path / "r.json"
    done = subprocess.run([python, "-m", "apiprof", "bench", "--app", "shapes_app:app",
                           "--app-dir", str(APPS), "--urls", str(urls), "--health", "/health",
                           "-n", str(2 * len(shapes_app.EXPECTED)), "-c", "1", "-t", "1",
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(out.read_text())["routes"]["warm"]}
    names = {f"{m} {t}" for m, _, t in shapes_app.EXPECTED}
    assert set(rows) == names
    assert rows["GET /t/{tenant}/orders/{order_id}"]["urls"] == [
        "GET /t/acme/orders/7", "GET /t/zeta/orders/8"]
    assert rows["GET /t/{tenant}/orders/{order_id}"]["endpoint"].endswith("(tenant_order)")
    assert rows["GET /api/v1/users/{user_id}"]["endpoint"].endswith("(read_user)")
    assert rows["GET /raw/{path}"]["endpoint"] is None
    assert "GET /sub/reports/{report_id}" in done.stdout



def report_calls(path: Path, route: str) -> dict[str, int]:
    r = subprocess.run([sys.executable, "-m", "apiprof", "report", str(path), "--format",
                        "json", "--route", route], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {f["qualname"]: f["calls"] for f in json.loads(r.stdout)["functions"]}


def test_tracer_route_labels_are_the_full_templates(tmp_path):
    """`apiprof run -m uvicorn`: every tenant's requests are one route's work, and a
    websocket's work is labelled WS with its template."""
    port = free_port()
    out = tmp_path / "shapes.apiprof"
    log_path = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "apiprof", "run", "-q", "-o", str(out), "-m", "uvicorn",
           "shapes_app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
           "warning"]
    def drive(client: httpx.Client) -> None:
        for i in range(5):
            assert client.get(f"/t/tenant{i}/orders/{i}").status_code == 200
        assert client.get("/api/v1/users/ann").status_code == 200

        async def talk() -> str:
            url = f"ws://127.0.0.1:{port}/api/v1/users/ann/ws/lobby"
            async with websockets.connect(url) as ws:
                return str(await ws.recv())

        assert asyncio.run(talk()) == "lobby"

    serve_profiled(cmd, APPS, {}, port, log_path, drive)
    assert report_calls(out, "GET /t/{tenant}/orders/{order_id}")["tenant_order"] == 5
    assert report_calls(out, "GET /api/v1/users/{user_id}")["read_user"] == 1
    assert report_calls(out, "WS /api/v1/users/{user_id}/ws/{room}")["room"] == 1


def test_a_route_object_seen_once_answers_new_paths_without_a_match(monkeypatch):
    """The middleware's steady state: a new /t/{tenant}/orders/{id} path costs a regex
    match against the template its route object was seen under, not a walk of the
    routes; a route object included at two prefixes is matched every time."""
    import apiprof._labels as labels

    walks: list[int] = []
    real = labels.match
    monkeypatch.setattr(labels, "match", lambda *a: walks.append(1) or real(*a))
    finder = RouteFinder(shapes_app.app)
    (mount,) = [r for r in shapes_app.app.routes if getattr(r, "path", "") == "/t/{tenant}"]
    leaf = mount.app.routes[0]
    base = {"type": "http", "method": "GET", "root_path": "", "headers": [],
            "query_string": b""}
    for i in range(20):
        before = {**base, "path": f"/t/tenant{i}/orders/{i}"}
        assert finder.routed(before, leaf) == "/t/{tenant}/orders/{order_id}"
    assert len(walks) == 1
    shared = shapes_app.shared.routes[0]
    for path, want in [("/v2/shared/1", "/{version}/shared/{n}"),
                       ("/v1/shared/2", "/v1/shared/{n}"),
                       ("/v3/shared/3", "/{version}/shared/{n}"),
                       ("/v1/shared/4", "/v1/shared/{n}")]:
        assert finder.routed({**base, "path": path}, shared) == want
    assert len(walks) == 5
