"""The shop service. Run with ``uvicorn shop.app:app`` from ``examples/shop``.

Every route is ordinary application code, and most of them hide one well-known
performance problem; README.md lists them with the line to look at and the fix.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import html
import io
import json
import math
import os
import secrets
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from shop import db
from shop.middleware import RouteTimer
from shop.models import (
    CacheStats,
    Customer,
    Inventory,
    LoginIn,
    LoginOut,
    Money,
    Order,
    OrderIn,
    OrderItem,
    Product,
    ProductPage,
    Rate,
    Recommendation,
    Recommendations,
    Reservation,
    ReserveIn,
    Shipping,
    Tag,
    Variant,
)
from shop.recommend import Index, build_index, similar
from shop.timing import instrument, timer

VARIANT_OPTIONS = ("standard", "gift-wrapped", "refill pack", "bundle of 3", "travel size")
CARRIERS: dict[str, tuple[str, int, int, int]] = {
    # zone: (carrier, base rate, rate per started kg, estimated days)
    "domestic": ("PostNord", 490, 120, 2),
    "eu": ("DHL Parcel", 990, 310, 4),
    "world": ("UPS Worldwide", 2490, 890, 8),
}
CARRIER_LATENCY_S = 0.05  # simulated round trip to the carrier's quote API

# Rendered product pages. Never evicted, and the key contains the request id, so nothing
# is ever served from it: it only grows (README.md, "render").
_RENDER_CACHE: dict[tuple[int, str, str], str] = {}
# Guards the stock read-modify-write in reserve(), DB round trips included (README.md).
_INVENTORY_LOCK = threading.Lock()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with timer("startup"):
        db.init_db()
        app.state.rec_index = load_index()
    yield
    write_timer_report()


def load_index() -> Index:
    conn = db.connect()
    try:
        rows = db.fetch_all(conn, "SELECT id, name, description, tags FROM products")
    finally:
        conn.close()
    return build_index((r["id"], r["name"], f"{r['name']} {r['description']}") for r in rows)


def write_timer_report() -> None:
    prefix = os.environ.get("SHOP_TIMER_REPORT")
    if not prefix:
        return
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.txt").write_text(timer.report())
    Path(f"{prefix}.json").write_text(json.dumps(timer.stats(), indent=2) + "\n")


app = FastAPI(title="shop", lifespan=lifespan)
if os.environ.get("SHOP_ROUTE_TIMER", "1") != "0":
    app.add_middleware(RouteTimer)
if os.environ.get("SHOP_APIPROF", "1") != "0":
    instrument(app)  # apiprof's route statistics (APIPROF_STATS_DIR: per-worker files)


def money(cents: int) -> Money:
    return Money(amount_cents=cents, display=f"€{cents / 100:,.2f}")


def to_product(row: sqlite3.Row) -> Product:
    stock = row["stock"]
    status = "out of stock" if stock == 0 else "low" if stock < 5 else "available"
    variants = [
        Variant(
            sku=f"{row['sku']}-{i}",
            option=VARIANT_OPTIONS[i],
            price=money(row["price_cents"] + 150 * i),
            in_stock=stock > i,
        )
        for i in range(1 + row["id"] % len(VARIANT_OPTIONS))
    ]
    return Product(
        id=row["id"],
        sku=row["sku"],
        name=row["name"],
        category=row["category"],
        description=row["description"],
        price=money(row["price_cents"]),
        inventory=Inventory(stock=stock, status=status, weight_grams=row["weight_grams"]),
        tags=[Tag(slug=t, label=t.title()) for t in row["tags"].split(",")],
        variants=variants,
    )


def get_product_row(conn: sqlite3.Connection, product_id: int) -> sqlite3.Row:
    row = db.fetch_one(conn, "SELECT * FROM products WHERE id = ?", (product_id,))
    if row is None:
        raise HTTPException(404, f"no product {product_id}")
    return row


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/products")
def list_products(
    offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)
) -> ProductPage:
    conn = db.connect()
    try:
        total = db.fetch_one(conn, "SELECT COUNT(*) AS n FROM products")
        rows = db.fetch_all(
            conn, "SELECT * FROM products ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        )
    finally:
        conn.close()
    items = [to_product(row) for row in rows]
    return ProductPage(total=total["n"] if total else 0, offset=offset, limit=limit, items=items)


@app.get("/products/{product_id}")
def get_product(product_id: int) -> Product:
    conn = db.connect()
    try:
        return to_product(get_product_row(conn, product_id))
    finally:
        conn.close()


@app.get("/products/{product_id}/recommendations")
def recommendations(
    request: Request, product_id: int, k: int = Query(10, ge=1, le=50)
) -> Recommendations:
    index: Index = request.app.state.rec_index
    if product_id not in index.vectors:
        raise HTTPException(404, f"no product {product_id}")
    items = [
        Recommendation(product_id=pid, name=index.names[pid], score=score)
        for pid, score in similar(index, product_id, k)
    ]
    return Recommendations(product_id=product_id, items=items)


@app.get("/products/{product_id}/render", response_class=HTMLResponse)
def render_product(request: Request, product_id: int) -> HTMLResponse:
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    key = (product_id, str(request.query_params), request_id)
    page = _RENDER_CACHE.get(key)
    if page is None:
        conn = db.connect()
        try:
            product = to_product(get_product_row(conn, product_id))
        finally:
            conn.close()
        page = render_page(product, request.query_params.get("lang", "en"))
        _RENDER_CACHE[key] = page
    return HTMLResponse(page, headers={"X-Request-ID": request_id})


def render_page(product: Product, lang: str) -> str:
    esc = html.escape
    variants = "\n".join(
        f"<li>{esc(v.option)}: {esc(v.price.display)}{'' if v.in_stock else ' (sold out)'}</li>"
        for v in product.variants
    )
    tags = " ".join(f'<span class="tag">{esc(t.label)}</span>' for t in product.tags)
    ld = esc(product.model_dump_json())
    return (
        f'<!doctype html><html lang="{esc(lang)}"><head><meta charset="utf-8">'
        f"<title>{esc(product.name)}</title>"
        f'<script type="application/ld+json">{ld}</script></head><body>'
        f"<h1>{esc(product.name)}</h1><p class=price>{esc(product.price.display)}</p>"
        f"<p>{esc(product.description)}</p><div>{tags}</div><ul>{variants}</ul>"
        f"<p>{esc(product.inventory.status)}</p></body></html>"
    )


@app.get("/internal/cache-stats")
def cache_stats() -> CacheStats:
    """Debug: size of the render cache (see README.md, "render")."""
    entries = list(_RENDER_CACHE.values())
    return CacheStats(
        render_cache_entries=len(entries), render_cache_bytes=sum(len(p) for p in entries)
    )


@app.get("/internal/rates/{zone}")
async def carrier_rate(zone: str, weight_grams: int = Query(ge=1, le=100_000)) -> Rate:
    """Stands in for a carrier's quote API; the sleep is that upstream's response time."""
    if zone not in CARRIERS:
        raise HTTPException(404, f"no carrier for zone {zone!r}")
    carrier, base, per_kg, days = CARRIERS[zone]
    await asyncio.sleep(CARRIER_LATENCY_S)
    rate = base + per_kg * math.ceil(weight_grams / 1000)
    return Rate(zone=zone, carrier=carrier, rate_cents=rate, estimated_days=days)


@app.get("/products/{product_id}/shipping")
async def shipping(request: Request, product_id: int, zone: str = "domestic") -> Shipping:
    def weight() -> int:
        conn = db.connect()
        try:
            return int(get_product_row(conn, product_id)["weight_grams"])
        finally:
            conn.close()

    weight_grams = await run_in_threadpool(weight)
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        resp = await client.get(
            f"{request.base_url}internal/rates/{zone}", params={"weight_grams": weight_grams}
        )
    if resp.status_code == 404:
        raise HTTPException(404, f"no carrier for zone {zone!r}")
    resp.raise_for_status()
    rate = Rate.model_validate(resp.json())
    return Shipping(product_id=product_id, weight_grams=weight_grams, **rate.model_dump())


@app.get("/orders/recent")
def recent_orders(limit: int = Query(20, ge=1, le=100)) -> list[Order]:
    conn = db.connect()
    try:
        orders = db.fetch_all(
            conn, "SELECT * FROM orders ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
        )
        return [load_order(conn, row) for row in orders]
    finally:
        conn.close()


def load_order(conn: sqlite3.Connection, row: sqlite3.Row) -> Order:
    customer = db.fetch_one(
        conn, "SELECT id, name, email, zone FROM customers WHERE id = ?", (row["customer_id"],)
    )
    items = db.fetch_all(
        conn,
        "SELECT i.product_id, p.name AS product_name, i.quantity, i.unit_price_cents"
        " FROM order_items i JOIN products p ON p.id = i.product_id"
        " WHERE i.order_id = ? ORDER BY i.id",
        (row["id"],),
    )
    lines = [OrderItem(**dict(item)) for item in items]
    return Order(
        id=row["id"],
        created_at=row["created_at"],
        status=row["status"],
        customer=Customer(**dict(customer)) if customer else Customer(
            id=row["customer_id"], name="?", email="?", zone="?"
        ),
        items=lines,
        total_cents=sum(line.quantity * line.unit_price_cents for line in lines),
    )


@app.post("/orders", status_code=201)
def create_order(order: OrderIn) -> Order:
    conn = db.connect()
    try:
        customer = db.fetch_one(conn, "SELECT id FROM customers WHERE id = ?", (order.customer_id,))
        if customer is None:
            raise HTTPException(404, f"no customer {order.customer_id}")
        created = datetime.now(UTC).isoformat()
        cur = db.execute(
            conn,
            "INSERT INTO orders (customer_id, created_at, status) VALUES (?, ?, 'paid')",
            (order.customer_id, created),
        )
        order_id = cur.lastrowid
        for line in order.items:
            product = get_product_row(conn, line.product_id)
            taken = db.execute(
                conn,
                "UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?",
                (line.quantity, line.product_id, line.quantity),
            )
            if taken.rowcount != 1:
                raise HTTPException(409, f"not enough stock for product {line.product_id}")
            db.execute(
                conn,
                "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)"
                " VALUES (?, ?, ?, ?)",
                (order_id, line.product_id, line.quantity, product["price_cents"]),
            )
        db.commit(conn)
        row = db.fetch_one(conn, "SELECT * FROM orders WHERE id = ?", (order_id,))
        assert row is not None
        return load_order(conn, row)
    finally:
        conn.rollback()  # no-op after commit; undoes a half-written order otherwise
        conn.close()


@app.post("/login")
async def login(body: LoginIn) -> LoginOut:
    conn = db.connect()
    try:
        row = db.fetch_one(
            conn,
            "SELECT id, password_salt, password_hash FROM customers WHERE email = ?",
            (body.email,),
        )
    finally:
        conn.close()
    salt = row["password_salt"] if row and row["password_salt"] else b"\0" * 16
    # Blocking: ~50 ms of CPU on the event loop thread (README.md, "login").
    digest = db.hash_password(body.password, salt)
    if row is None or row["password_hash"] is None or not hmac.compare_digest(
        digest, row["password_hash"]
    ):
        raise HTTPException(401, "bad email or password")
    return LoginOut(customer_id=row["id"], token=secrets.token_urlsafe(24))


@app.post("/inventory/{sku}/reserve")
def reserve(sku: str, body: ReserveIn | None = None) -> Reservation:
    quantity = body.quantity if body else 1
    conn = db.connect()
    try:
        with _INVENTORY_LOCK:  # held across three DB round trips, commit included
            row = db.fetch_one(conn, "SELECT id, stock FROM products WHERE sku = ?", (sku,))
            if row is None:
                raise HTTPException(404, f"no product with sku {sku!r}")
            if row["stock"] < quantity:
                raise HTTPException(409, f"only {row['stock']} left of {sku}")
            remaining = row["stock"] - quantity
            db.execute(conn, "UPDATE products SET stock = ? WHERE id = ?", (remaining, row["id"]))
            db.commit(conn)
    finally:
        conn.close()
    return Reservation(sku=sku, reserved=quantity, remaining=remaining)


CSV_HEADER = ("order_id", "created_at", "status", "customer_id", "items", "total_cents")


@app.get("/export/orders.csv")
def export_orders() -> StreamingResponse:
    return StreamingResponse(
        csv_rows(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="orders.csv"'},
    )


def csv_rows() -> Iterator[str]:
    """One CSV line per yield, straight off the cursor (README.md, "export")."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")

    def line(values: tuple[object, ...]) -> str:
        buf.seek(0)
        buf.truncate()
        writer.writerow(values)
        return buf.getvalue()

    yield line(CSV_HEADER)
    conn = db.connect()
    try:
        for chunk in db.fetch_chunks(
            conn,
            "SELECT o.id, o.created_at, o.status, o.customer_id,"
            " COUNT(i.id), COALESCE(SUM(i.quantity * i.unit_price_cents), 0)"
            " FROM orders o LEFT JOIN order_items i ON i.order_id = o.id"
            " GROUP BY o.id ORDER BY o.id",
        ):
            for row in chunk:
                yield line(tuple(row))
    finally:
        conn.close()
