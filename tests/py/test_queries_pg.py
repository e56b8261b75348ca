"""Captured statements on a real PostgreSQL server (the session's ``postgres`` fixture):
tests/py/apps/pg_app.py under ``apiprof run --queries`` serves the same N+1 through
SQLAlchemy's sync and async engines on psycopg 3, its async engine on asyncpg, and asyncpg
and psycopg used directly. Exact counts per request, the N+1 named with its statement and
line, none on the route that batches, and the time classified as database waits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import serve_profiled

pytest.importorskip("psycopg", reason="psycopg 3 does not install on this Python")
pytest.importorskip("asyncpg", reason="asyncpg does not install on this Python")
pytest.importorskip("greenlet", reason="greenlet (SQLAlchemy's async engines) does not install")

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
REQS = 2
ITEMS = 8
ROUTES = ("/sync/items", "/sync/items/batched", "/async/items", "/sa-asyncpg/items",
          "/asyncpg/items", "/psycopg/count")
OWNER_PSYCOPG = "SELECT owner.id, owner.name FROM owner WHERE owner.id = %(pk_1)s::INTEGER"
OWNER_ASYNCPG = "SELECT owner.id, owner.name FROM owner WHERE owner.id = $1::INTEGER"
LISTING = "SELECT item.id, item.title, item.owner_id FROM item ORDER BY item.id"


@pytest.fixture(scope="module")
def pg_file(postgres, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pg")
    port = free_port()
    out = tmp / "pg.apiprof"

    def drive(client: httpx.Client) -> None:
        for path in ROUTES:
            for _ in range(REQS):
                r = client.get(path)
                assert r.status_code == 200, r.text
                if path.endswith("items") or path.endswith("batched"):
                    assert len(r.json()) == ITEMS and r.json()[7]["owner"] == "owner 7"
                else:
                    assert r.json() == {"items": ITEMS}

    serve_profiled([str(APIPROF), "run", "--queries", "-q", "-o", str(out), "-m", "uvicorn",
                    "pg_app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
                    "warning"], APPS, {"PG_DSN": postgres.dsn}, port, tmp / "server.log", drive)
    return out


@pytest.fixture(scope="module")
def pg_profile(pg_file: Path):
    return _core.load(str(pg_file))


def statements(profile, route: str) -> dict[str, dict]:
    return {q["statement"]: q for q in profile.queries() if q["route"] == route}


@pytest.mark.parametrize(("route", "owner", "function", "code"), [
    ("GET /sync/items", OWNER_PSYCOPG, "sync_items", "session.get(Owner, item.owner_id)"),
    ("GET /async/items", OWNER_PSYCOPG, "orm_items", "await session.get(Owner, item.owner_id)"),
    ("GET /sa-asyncpg/items", OWNER_ASYNCPG, "orm_items",
     "await session.get(Owner, item.owner_id)"),
])
def test_sqlalchemy_engines_count_each_statement(pg_profile, route, owner, function, code):
    qs = statements(pg_profile, route)
    assert qs[LISTING]["count"] == REQS and qs[LISTING]["max_per_request"] == 1
    assert not qs[LISTING]["n_plus_one"]
    n1 = qs[owner]
    assert (n1["count"], n1["requests"], n1["max_per_request"]) == (REQS * ITEMS, REQS, ITEMS)
    assert n1["n_plus_one"] and n1["function"] == function and n1["total_ns"] > 0
    assert n1["file"].endswith("apps/pg_app.py")
    assert Path(n1["file"]).read_text().splitlines()[n1["line"] - 1].strip().endswith(code)


def test_asyncpg_and_psycopg_directly(pg_profile):
    qs = statements(pg_profile, "GET /asyncpg/items")
    listing = qs["SELECT id, title, owner_id FROM item ORDER BY id"]
    assert (listing["count"], listing["rows"]) == (REQS, REQS * ITEMS)
    owner = qs["SELECT name FROM owner WHERE id = $1"]
    assert (owner["count"], owner["max_per_request"]) == (REQS * ITEMS, ITEMS)
    assert owner["n_plus_one"] and owner["function"] == "asyncpg_items"
    count = statements(pg_profile, "GET /psycopg/count")
    assert [(s, q["count"]) for s, q in count.items()] == [
        ("SELECT count(*) FROM item WHERE title LIKE ?", REQS)]


def test_the_batched_route_is_no_n_plus_one(pg_profile):
    qs = statements(pg_profile, "GET /sync/items/batched")
    assert qs[LISTING]["count"] == REQS
    batched = [q for s, q in qs.items() if "WHERE owner.id IN" in s]
    assert len(batched) == 1 and batched[0]["count"] == REQS
    assert not any(q["n_plus_one"] for q in qs.values())


def test_n_plus_one_findings_name_the_statement(pg_profile):
    n1 = {f["route"]: f for f in pg_profile.findings() if f["kind"] == "n_plus_one"}
    assert set(n1) == {"GET /sync/items", "GET /async/items", "GET /sa-asyncpg/items",
                       "GET /asyncpg/items"}
    assert all(f["count"] == REQS * ITEMS for f in n1.values())
    assert OWNER_PSYCOPG in n1["GET /sync/items"]["message"]
    assert "SELECT name FROM owner WHERE id = $1" in n1["GET /asyncpg/items"]["message"]


def test_database_waits(pg_profile):
    """The drivers' time is database wait on every route, sync (psycopg's wait in a
    worker thread) and async (awaits in psycopg and asyncpg)."""
    split = {r["route"]: r["waits"] for r in pg_profile.routes()}
    for route in ("GET /sync/items", "GET /async/items", "GET /sa-asyncpg/items",
                  "GET /asyncpg/items", "GET /psycopg/count"):
        waits = split[route]
        assert waits.get("database", 0) > 0, (route, waits)
        assert waits["database"] == max(waits.values()), (route, waits)


def test_text_report_lists_the_statements(pg_file):
    text = subprocess.run([str(APIPROF), "report", str(pg_file)], capture_output=True,
                          text=True, check=True).stdout
    section = text[text.index("queries and outgoing calls"):]
    rows = [line for line in section.splitlines() if line.startswith("GET /asyncpg/items ")]
    n1 = [line for line in rows if "SELECT name FROM owner WHERE id = $1" in line]
    assert len(n1) == 1 and "[N+1]" in n1[0] and "pg_app.py:126" in n1[0]
    assert n1[0].split()[3:5] == [str(REQS * ITEMS), str(ITEMS)]    # count, per request


def test_html_io_view(pg_file, tmp_path):
    """The HTML report's I/O view in headless Chromium: a section per route with its
    split and its statements, the N+1 rows marked; a screenshot in .artifacts/report/."""
    from cdp import Browser
    from helpers import REPO_ROOT
    html = tmp_path / "pg.html"
    subprocess.run([str(APIPROF), "report", str(pg_file), "-o", str(html)], check=True,
                   capture_output=True)
    with Browser(tmp_path / "chromium", height=1800) as b:
        page = b.open(html.as_uri())
        page.wait_for("document.body && document.body.dataset.ready === '1'")
        assert page.errors == []
        got = page.eval("""Array.from(document.querySelectorAll('.io')).map(function (d) {
            return [d.dataset.ioRoute, d.querySelectorAll('.split span').length,
                    Array.from(d.querySelectorAll('tr.n1 td.stmt')).map(function (t) {
                        return t.textContent; })]; })""")
        io = {route: (spans, n1) for route, spans, n1 in got}
        assert io["GET /asyncpg/items"][0] >= 2     # running and database at least
        assert io["GET /asyncpg/items"][1] == ["SELECT name FROM owner WHERE id = $1 N+1"]
        assert io["GET /sync/items"][1] == [OWNER_PSYCOPG + " N+1"]
        assert io["GET /sync/items/batched"][1] == []
        share = page.eval("""(function () {
            var d = document.querySelector(".io[data-io-route='GET /asyncpg/items']");
            var tr = Array.from(d.querySelectorAll('tr')).filter(function (r) {
                return r.textContent.indexOf('FROM owner') >= 0; })[0];
            return tr.children[2].textContent + '|' + tr.children[3].textContent; })()""")
        assert share == f"{REQS * ITEMS}|{ITEMS}"
        page.eval("document.querySelector('.io').scrollIntoView()")
        out = REPO_ROOT / ".artifacts" / "report"
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(out / "io-view-pg.png")
