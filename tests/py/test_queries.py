"""Captured database statements (apiprof run --queries; src/ext/queries.c, ap_prof.h
"database queries") on the shop under real uvicorn and its real SQLite file: exact counts
per request, the N+1 of GET /orders/recent named with its line, none on the routes that
batch, and the statements kept by the native file and the JSON export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import SHOP_DIR, serve_profiled

APIPROF = Path(sys.executable).with_name("apiprof")
ORDERS = 3       # requests of GET /orders/recent
LIMIT = 20       # orders each


@pytest.fixture(scope="module")
def shop_queries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("queries")
    port = free_port()
    out = tmp / "shop.apiprof"

    def drive(client: httpx.Client) -> None:
        for _ in range(ORDERS):
            r = client.get("/orders/recent", params={"limit": LIMIT})
            assert r.status_code == 200 and len(r.json()) == LIMIT
        for pid in (1, 2, 3, 4):
            assert client.get(f"/products/{pid}").status_code == 200
        r = client.get("/export/orders.csv")
        assert r.status_code == 200 and r.text.count("\n") > 100

    serve_profiled([str(APIPROF), "run", "--queries", "-q", "-o", str(out), "-m", "uvicorn",
                    "shop.app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
                    "warning"], SHOP_DIR, {"SHOP_DB": str(tmp / "shop.db")}, port,
                   tmp / "server.log", drive)
    return out


def by_route(queries: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for q in queries:
        out.setdefault(q["route"], []).append(q)
    return out


def test_counts_per_request_and_the_n_plus_one(shop_queries):
    routes = by_route(_core.load(str(shop_queries)).queries())
    recent = {q["statement"]: q for q in routes["GET /orders/recent"]}
    orders = recent["SELECT * FROM orders ORDER BY created_at DESC, id DESC LIMIT ?"]
    assert (orders["count"], orders["requests"], orders["max_per_request"]) == (ORDERS, ORDERS, 1)
    assert not orders["n_plus_one"]
    customers = recent["SELECT id, name, email, zone FROM customers WHERE id = ?"]
    assert customers["count"] == ORDERS * LIMIT            # one per order: the planted N+1
    assert customers["max_per_request"] == LIMIT and customers["n_plus_one"]
    assert customers["file"].endswith("shop/db.py") and customers["function"] == "fetch_one"
    lines = Path(customers["file"]).read_text().splitlines()
    assert "conn.execute(sql, params)" in lines[customers["line"] - 1]
    assert customers["total_ns"] > 0
    items = [q for s, q in recent.items() if "FROM order_items" in s]
    assert len(items) == 1 and items[0]["count"] == ORDERS * LIMIT and items[0]["n_plus_one"]
    # the routes that read many rows with one query, or one row, are no N+1
    for route in ("GET /products/{product_id}", "GET /export/orders.csv"):
        assert routes[route] and not any(q["n_plus_one"] for q in routes[route]), routes[route]
    product = {q["statement"]: q for q in routes["GET /products/{product_id}"]}
    assert product["SELECT * FROM products WHERE id = ?"]["count"] == 4


def test_capture_keeps_the_driver_calls_and_their_database_waits(shop_queries):
    """The timed connection's driver calls are recorded under sqlite3's names, as without
    --queries, so the route's database wait is still there."""
    profile = _core.load(str(shop_queries))
    split = {r["route"]: r for r in profile.routes()}
    assert split["GET /orders/recent"]["waits"]["database"] > 0
    funcs = {f["qualname"]: f for f in json.loads(profile.json())["functions"]}
    statements = sum(q["count"] for q in profile.queries()
                     if q["route"] and not q["statement"].startswith("INSERT"))
    # the shop runs its statements with Connection.execute, recorded as sqlite3's (its
    # inner Cursor.execute is sqlite3's C-to-C call, not an event, as without capture)
    runs = sum(funcs[name]["calls"] for name in ("sqlite3.Connection.execute",
                                                 "sqlite3.Cursor.execute") if name in funcs)
    assert runs >= statements
    assert not any(name.startswith("apiprof.") for name in funcs)


def test_n_plus_one_findings_name_the_route_count_and_line(shop_queries):
    findings = _core.load(str(shop_queries)).findings()
    n1 = [f for f in findings if f["kind"] == "n_plus_one"]
    assert {f["route"] for f in n1} == {"GET /orders/recent"}
    assert len(n1) == 2 and all(f["count"] == ORDERS * LIMIT for f in n1)
    assert {f["line"] for f in n1} == {100, 105}
    assert all("up to 20 times in one request" in f["message"] for f in n1)
    # the statement-based finding replaces the call-count one
    assert not [f for f in findings if f["kind"] == "repeated_query"]


def test_queries_survive_the_json_export_and_back(shop_queries, tmp_path):
    doc = json.loads(subprocess.run([str(APIPROF), "report", str(shop_queries), "--format",
                                     "json"], capture_output=True, text=True,
                                    check=True).stdout)
    exported = [q for q in doc["queries"] if q["route"] == "GET /orders/recent"]
    assert {(q["statement"], q["count"], q["n_plus_one"]) for q in exported} >= {
        ("SELECT id, name, email, zone FROM customers WHERE id = ?", ORDERS * LIMIT, True)}
    assert all({"statement", "count", "total_ns", "file", "line", "route"} <= set(q)
               for q in doc["queries"])
    back = _core.loads(json.dumps(doc).encode()).queries()
    assert sorted(map(str, back)) == sorted(map(str, _core.load(str(shop_queries)).queries()))
    # and through a native file written from the export
    again = tmp_path / "again.apiprof"
    _core.loads(json.dumps(doc).encode()).save(str(again))
    assert _core.load(str(again)).queries() == back


def test_without_the_option_nothing_is_captured(tmp_path):
    script = tmp_path / "q.py"
    script.write_text("import sqlite3\n"
                      "c = sqlite3.connect(':memory:')\n"
                      "for i in range(7):\n"
                      "    c.execute('SELECT ' + str(i)).fetchall()\n")
    for flags, expect in (([], 0), (["--queries"], 7)):
        out = tmp_path / f"q{len(flags)}.apiprof"
        r = subprocess.run([str(APIPROF), "run", *flags, "-q", "-o", str(out), str(script)],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        qs = _core.load(str(out)).queries()
        assert sum(q["count"] for q in qs) == expect
        if expect:   # literals replaced: one shape, from the script's line 4
            assert [(q["statement"], q["line"], q["route"]) for q in qs] == [("SELECT ?", 4, None)]


def test_call_site_skips_generated_code(tmp_path):
    """A statement run through code made at run time (SQLAlchemy's "<sqlalchemy generated
    ...>" wrappers) is charged to the app's line that called it, as are its waits."""
    script = tmp_path / "g.py"
    script.write_text(
        "import sqlite3\n"
        "ns = {}\n"
        "exec(compile('def run(c, i):\\n    return c.execute(\\'SELECT \\' + str(i))\\n',\n"
        "             '<sqlalchemy generated wrapper for run>', 'exec'), ns)\n"
        "c = sqlite3.connect(':memory:')\n"
        "for i in range(3):\n"
        "    ns['run'](c, i).fetchall()\n")
    out = tmp_path / "g.apiprof"
    r = subprocess.run([str(APIPROF), "run", "--queries", "-q", "-o", str(out), str(script)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (q,) = _core.load(str(out)).queries()
    assert (q["statement"], q["count"], q["line"], q["function"]) == ("SELECT ?", 3, 7,
                                                                     "<module>")
    assert q["file"].endswith("g.py")


def test_timed_connection_keeps_sqlite3s_behaviour():
    """Under capture, sqlite3's classes behave as sqlite3's: cursor(factory=...) by
    position or keyword gives the app's cursor (not timed), Connection.execute returns
    its cursor, errors pass unchanged (and the failed statement's time counts)."""
    import sqlite3

    import apiprof

    class Mine(sqlite3.Cursor):
        pass

    with apiprof.Profiler(queries=True) as prof:
        conn = sqlite3.connect(":memory:")
        assert type(conn).__module__ == "sqlite3" and type(conn).__name__ == "Connection"
        assert isinstance(conn.cursor(factory=Mine), Mine)
        assert isinstance(conn.cursor(Mine), Mine)
        conn.cursor(factory=Mine).execute("SELECT 'not timed'")
        cur = conn.execute("SELECT ?", (1,))
        assert cur.fetchall() == [(1,)] and isinstance(cur, sqlite3.Cursor)
        conn.cursor().execute("SELECT 2")
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        with pytest.raises(sqlite3.OperationalError, match="syntax error"):
            conn.execute("SELEC 3")
        with pytest.raises(TypeError):
            conn.cursor(Mine, Mine)
        conn.close()
    counts: dict[str, int] = {}
    for q in prof.profile.queries():   # a record per statement and line
        counts[q["statement"]] = counts.get(q["statement"], 0) + q["count"]
    assert counts == {"SELECT ?": 2, "CREATE TABLE t (x)": 1, "INSERT INTO t VALUES (?)": 1,
                      "SELEC ?": 1}, counts


REQS = 3


@pytest.fixture(scope="module")
def sqlmodel_queries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sqlmodel")
    tmp = tmp_path_factory.mktemp("sqlmodel")
    port = free_port()
    out = tmp / "items.apiprof"

    def drive(client: httpx.Client) -> None:
        for path in ("/items", "/items/batched", "/async/items"):
            for _ in range(REQS):
                r = client.get(path)
                assert r.status_code == 200 and len(r.json()) == 8
                assert r.json()[7]["owner"] == "owner 7"

    serve_profiled([str(APIPROF), "run", "--queries", "-q", "-o", str(out), "-m", "uvicorn",
                    "sqlmodel_app:app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"], Path(__file__).parent / "apps",
                   {"ITEMS_DB": str(tmp / "items.db")}, port, tmp / "server.log", drive)
    return out


def test_sqlmodel_statements_and_n_plus_one(sqlmodel_queries):
    profile = _core.load(str(sqlmodel_queries))
    routes = by_route(profile.queries())
    plain, batched = routes["GET /items"], routes["GET /items/batched"]
    owners = [q for q in plain if q["statement"].startswith("SELECT owner.")]
    assert len(owners) == 1 and owners[0]["count"] == REQS * 8      # one per item
    assert owners[0]["max_per_request"] == 8 and owners[0]["n_plus_one"]
    assert owners[0]["statement"].endswith("WHERE owner.id = ?")
    assert owners[0]["file"].endswith("sqlmodel_app.py") and owners[0]["function"] == "items"
    listing = [q for q in plain if q["statement"].startswith("SELECT item.")]
    assert len(listing) == 1 and listing[0]["count"] == REQS
    # the batched route: two statements per request, the IN list as one placeholder
    assert sorted(q["count"] for q in batched if q["statement"].startswith("SELECT")) == [
        REQS, REQS]
    assert any("IN (?)" in q["statement"] for q in batched)
    assert not any(q["n_plus_one"] for q in batched)
    n1 = [f for f in profile.findings() if f["kind"] == "n_plus_one"]
    assert sorted((f["route"], f["count"]) for f in n1) == [("GET /async/items", REQS * 8),
                                                            ("GET /items", REQS * 8)]
    assert [f["line"] for f in n1 if f["route"] == "GET /items"] == [owners[0]["line"]]


def test_async_engine_statements_keep_their_request_and_line(sqlmodel_queries):
    """SQLAlchemy's async engine on SQLite: aiosqlite's worker thread runs each statement,
    charged to the request, the route and the app's line that awaited it."""
    owners = [q for q in by_route(_core.load(str(sqlmodel_queries)).queries())["GET /async/items"]
              if q["statement"].startswith("SELECT owner.")]
    assert len(owners) == 1 and owners[0]["count"] == REQS * 8
    assert owners[0]["requests"] == REQS and owners[0]["max_per_request"] == 8
    assert owners[0]["n_plus_one"] and owners[0]["function"] == "async_items"
    lines = Path(owners[0]["file"]).read_text().splitlines()
    assert "await session.get(Owner" in lines[owners[0]["line"] - 1]
