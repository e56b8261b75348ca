"""The example shop (examples/shop) against a real uvicorn, with a fresh SQLite file."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SHOP_DIR

N_PRODUCTS = 400  # shop.db.N_PRODUCTS
GOOD_LOGIN = {"email": "alice@example.com", "password": "correct horse battery staple"}


@dataclass
class Shop:
    url: str
    db: Path

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.db, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def shop(serve_module, tmp_path_factory) -> Shop:
    db = tmp_path_factory.mktemp("shop") / "shop.db"
    server = serve_module("shop.app:app", cwd=SHOP_DIR, env={"SHOP_DB": str(db)}, health="/health")
    return Shop(server.url, db)


def test_health(shop, http):
    resp = http.get(f"{shop.url}/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_the_database_is_a_seeded_file(shop):
    assert shop.db.is_file()
    counts = {t: shop.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("products", "customers")}
    assert counts == {"products": N_PRODUCTS, "customers": 250}
    assert shop.query("SELECT COUNT(*) FROM orders WHERE id <= 3000")[0][0] == 3000
    assert shop.query("SELECT COUNT(*) FROM order_items")[0][0] > 3000


def test_product_list_is_large_and_nested(shop, http):
    resp = http.get(f"{shop.url}/products", params={"limit": 500})
    assert resp.status_code == 200
    page = resp.json()
    assert page["total"] == N_PRODUCTS and page["limit"] == 500
    assert len(page["items"]) == N_PRODUCTS
    first = page["items"][0]
    assert set(first) == {
        "id", "sku", "name", "category", "description", "price", "inventory", "tags", "variants",
    }
    assert set(first["price"]) == {"amount_cents", "currency", "display"}
    assert first["variants"] and set(first["variants"][0]["price"]) == set(first["price"])
    assert all(set(t) == {"slug", "label"} for t in first["tags"])

    window = http.get(f"{shop.url}/products", params={"offset": 5, "limit": 10}).json()
    assert [p["id"] for p in window["items"]] == list(range(6, 16))
    assert http.get(f"{shop.url}/products", params={"limit": 501}).status_code == 422


def test_product_detail(shop, http):
    (row,) = shop.query("SELECT * FROM products WHERE id = 42")
    product = http.get(f"{shop.url}/products/42").json()
    assert product["sku"] == row["sku"] == "SKU-00042"
    assert product["name"] == row["name"]
    assert product["price"]["amount_cents"] == row["price_cents"]
    assert product["inventory"]["weight_grams"] == row["weight_grams"]
    assert http.get(f"{shop.url}/products/99999").status_code == 404


def test_recommendations(shop, http):
    resp = http.get(f"{shop.url}/products/7/recommendations")
    assert resp.status_code == 200
    body = resp.json()
    assert body["product_id"] == 7
    items = body["items"]
    assert len(items) == 10
    assert 7 not in {i["product_id"] for i in items}
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    three = http.get(f"{shop.url}/products/7/recommendations", params={"k": 3}).json()
    assert three["items"] == items[:3]
    assert http.get(f"{shop.url}/products/99999/recommendations").status_code == 404


def test_recent_orders(shop, http):
    resp = http.get(f"{shop.url}/orders/recent", params={"limit": 5})
    assert resp.status_code == 200
    orders = resp.json()
    expected = shop.query("SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT 5")
    assert [o["id"] for o in orders] == [r["id"] for r in expected]
    for order in orders:
        items = shop.query(
            "SELECT quantity, unit_price_cents FROM order_items WHERE order_id = ?", (order["id"],)
        )
        assert len(order["items"]) == len(items) >= 1
        assert order["total_cents"] == sum(i["quantity"] * i["unit_price_cents"] for i in items)
        assert set(order["customer"]) == {"id", "name", "email", "zone"}
    assert len(http.get(f"{shop.url}/orders/recent").json()) == 20


def test_create_order(shop, http):
    (before,) = shop.query("SELECT stock, price_cents FROM products WHERE id = 11")
    assert before["stock"] >= 2
    order = {"customer_id": 9, "items": [{"product_id": 11, "quantity": 2}]}
    resp = http.post(f"{shop.url}/orders", json=order)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["customer"]["id"] == 9 and created["status"] == "paid"
    assert created["items"] == [{
        "product_id": 11, "product_name": created["items"][0]["product_name"], "quantity": 2,
        "unit_price_cents": before["price_cents"],
    }]
    assert shop.query("SELECT stock FROM products WHERE id = 11")[0][0] == before["stock"] - 2
    assert shop.query("SELECT customer_id FROM orders WHERE id = ?", (created["id"],))[0][0] == 9
    assert http.get(f"{shop.url}/orders/recent", params={"limit": 1}).json()[0] == created

    orders = shop.query("SELECT COUNT(*) FROM orders")[0][0]
    too_many = {"customer_id": 9, "items": [{"product_id": 11, "quantity": 100}]}
    assert http.post(f"{shop.url}/orders", json=too_many).status_code == 409
    unknown = {"customer_id": 99999, "items": [{"product_id": 11, "quantity": 1}]}
    assert http.post(f"{shop.url}/orders", json=unknown).status_code == 404
    empty = {"customer_id": 9, "items": []}
    assert http.post(f"{shop.url}/orders", json=empty).status_code == 422
    assert shop.query("SELECT COUNT(*) FROM orders")[0][0] == orders  # nothing half-written
    assert shop.query("SELECT stock FROM products WHERE id = 11")[0][0] == before["stock"] - 2


def test_login(shop, http):
    resp = http.post(f"{shop.url}/login", json=GOOD_LOGIN)
    assert resp.status_code == 200
    assert resp.json()["customer_id"] == 1 and len(resp.json()["token"]) >= 32
    bad = {**GOOD_LOGIN, "password": "correct horse battery stapler"}
    assert http.post(f"{shop.url}/login", json=bad).status_code == 401
    unknown = {"email": "nobody@example.com", "password": "x"}
    assert http.post(f"{shop.url}/login", json=unknown).status_code == 401
    guest = {"email": "customer50@example.com", "password": ""}  # no password set
    assert http.post(f"{shop.url}/login", json=guest).status_code == 401


def cache_entries(shop: Shop, http: httpx.Client) -> int:
    stats = http.get(f"{shop.url}/internal/cache-stats").json()
    assert set(stats) == {"render_cache_entries", "render_cache_bytes"}
    return int(stats["render_cache_entries"])


def test_render_cache_grows_by_one_entry_per_request(shop, http):
    start = cache_entries(shop, http)
    pages = []
    for n in range(1, 4):
        resp = http.get(f"{shop.url}/products/5/render", params={"lang": "en"})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        pages.append(resp.text)
        assert cache_entries(shop, http) == start + n
    assert pages[0] == pages[1] == pages[2]  # same page, cached three times
    assert shop.query("SELECT name FROM products WHERE id = 5")[0][0] in pages[0]
    assert http.get(f"{shop.url}/products/99999/render").status_code == 404
    assert cache_entries(shop, http) == start + 3


def test_shipping_uses_the_internal_rate(shop, http):
    weight = shop.query("SELECT weight_grams FROM products WHERE id = 3")[0][0]
    for zone in ("domestic", "eu", "world"):
        resp = http.get(f"{shop.url}/products/3/shipping", params={"zone": zone})
        assert resp.status_code == 200, resp.text
        shipping = resp.json()
        rate = http.get(f"{shop.url}/internal/rates/{zone}", params={"weight_grams": weight})
        assert rate.status_code == 200
        assert shipping == {"product_id": 3, "weight_grams": weight, **rate.json()}
        assert shipping["rate_cents"] > 0
    assert http.get(f"{shop.url}/products/3/shipping", params={"zone": "mars"}).status_code == 404
    assert http.get(f"{shop.url}/products/99999/shipping").status_code == 404


def test_export_csv_has_one_row_per_order(shop, http):
    resp = http.get(f"{shop.url}/export/orders.csv")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert rows[0] == ["order_id", "created_at", "status", "customer_id", "items", "total_cents"]
    assert len(rows) - 1 == shop.query("SELECT COUNT(*) FROM orders")[0][0]
    (first,) = shop.query(
        "SELECT o.id, o.created_at, o.status, o.customer_id, COUNT(*), "
        "SUM(i.quantity * i.unit_price_cents) FROM orders o JOIN order_items i "
        "ON i.order_id = o.id WHERE o.id = 1 GROUP BY o.id"
    )
    assert rows[1] == [str(v) for v in first]


def test_reserve_never_oversells_under_concurrency(shop, http):
    (product,) = shop.query(
        "SELECT sku, stock FROM products WHERE stock BETWEEN 6 AND 12 ORDER BY id LIMIT 1"
    )
    sku, stock = product["sku"], product["stock"]
    attempts_per_thread = 3  # 8 threads x 3 = 24 attempts > stock
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            for _ in range(attempts_per_thread):
                resp = client.post(f"{shop.url}/inventory/{sku}/reserve", json={"quantity": 1})
                with lock:
                    results.append(resp)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ok = [r.json() for r in results if r.status_code == 200]
    assert sorted(r.status_code for r in results) == [200] * stock + [409] * (24 - stock)
    # every success took exactly one unit: the remaining counts are stock-1 ... 0, once each
    assert sorted(r["remaining"] for r in ok) == list(range(stock))
    assert shop.query("SELECT stock FROM products WHERE sku = ?", (sku,))[0][0] == 0
    assert http.post(f"{shop.url}/inventory/NOPE/reserve", json={}).status_code == 404


def test_drive_hits_every_route(shop):
    spec = importlib.util.spec_from_file_location("shop_drive", SHOP_DIR / "drive.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    lines: list[str] = []
    counts = module.drive(shop.url, 1, log=lines.append)
    routes = {
        "GET /health", "GET /products", "GET /products/{product_id}",
        "GET /products/{product_id}/recommendations", "GET /products/{product_id}/render",
        "GET /products/{product_id}/shipping", "GET /internal/rates/{zone}",
        "GET /internal/cache-stats", "GET /orders/recent", "POST /orders", "POST /login",
        "POST /inventory/{sku}/reserve", "GET /export/orders.csv",
    }
    assert set(counts) == routes
    assert all(n >= 1 for n in counts.values())
    assert len(lines) == len(routes) and all(line.endswith(" ok") for line in lines)


def timer_names(node: Any, under: str | None = None) -> set[tuple[str, str]]:
    """(parent, child) name pairs anywhere in apiprof's stats tree."""
    pairs: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        name = node.get("name") if isinstance(node.get("name"), str) else None
        if name and under:
            pairs.add((under, name))
        for value in node.values():
            pairs |= timer_names(value, name or under)
    elif isinstance(node, list):
        for value in node:
            pairs |= timer_names(value, under)
    return pairs


@pytest.mark.skipif(
    importlib.util.find_spec("apiprof") is None,
    reason=f"apiprof is not importable by {sys.executable}: the shop's timers are no-ops",
)
def test_timer_report_written_at_shutdown(serve, http, tmp_path):
    prefix = tmp_path / "reports" / "timers"
    server = serve(
        "shop.app:app", cwd=SHOP_DIR, health="/health",
        env={"SHOP_DB": str(tmp_path / "shop.db"), "SHOP_TIMER_REPORT": str(prefix)},
    )
    assert http.get(f"{server.url}/orders/recent", params={"limit": 3}).status_code == 200
    assert http.get(f"{server.url}/products/1").status_code == 200
    assert http.post(f"{server.url}/login", json=GOOD_LOGIN).status_code == 200
    assert server.stop() == 0
    assert "Traceback" not in server.log_path.read_text()

    text = (tmp_path / "reports" / "timers.txt").read_text()
    stats = json.loads((tmp_path / "reports" / "timers.json").read_text())
    for name in ("GET /orders/recent", "GET /products/{product_id}", "POST /login", "db.query"):
        assert name in text
    pairs = timer_names(stats)
    assert ("GET /orders/recent", "db.query") in pairs
    assert ("GET /products/{product_id}", "db.query") in pairs
    assert ("POST /login", "db.query") in pairs
    assert ("startup", "db.query") in pairs


def test_workers_starting_together_seed_the_database_once(tmp_path):
    """uvicorn --workers N: every worker's start-up runs init_db on the same file at once;
    one seeds it, the others find the seed (no UNIQUE constraint failure)."""
    db = tmp_path / "shared.db"
    code = "import shop.db; shop.db.init_db()"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=SHOP_DIR,
                              env={**os.environ, "SHOP_DB": str(db)},
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM products").fetchone()[0] == N_PRODUCTS
    finally:
        conn.close()


def test_make_demo_shows_errors_and_leaves_no_empty_log(tmp_path, monkeypatch):
    """make demo runs `apiprof report` with its stderr shown (a failure must be seen), and
    the demo removes a server log that a quiet run left empty (and keeps one with output)."""
    recipe = (SHOP_DIR.parent.parent / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    assert "apiprof report" in recipe and "2>/dev/null" not in recipe and "2>" not in recipe
    spec = importlib.util.spec_from_file_location("shop_demo", SHOP_DIR / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(SHOP_DIR))   # demo.py imports drive.py beside it
    spec.loader.exec_module(demo)
    monkeypatch.setattr(demo, "REPO_ROOT", tmp_path)
    empty, said = tmp_path / "quiet.log", tmp_path / "said.log"
    empty.write_bytes(b"")
    said.write_bytes(b"WARNING: something\n")
    demo.drop_if_empty(empty)
    demo.drop_if_empty(said)
    assert not empty.exists() and said.read_bytes() == b"WARNING: something\n"
