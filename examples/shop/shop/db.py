"""SQLite storage for the shop: schema, deterministic seed data and timed query helpers.

The database is a real file: ``$SHOP_DB``, default ``shop.db`` in the working directory.
Every SQL statement goes through :func:`fetch_all`, :func:`fetch_one`, :func:`execute`,
:func:`execute_many` or :func:`fetch_chunks`, each timed as ``db.query``.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shop.timing import timer

Params = Sequence[Any] | dict[str, Any]

SEED = 20240601
N_PRODUCTS = 400
N_CUSTOMERS = 250
N_ORDERS = 3000
PBKDF2_ITERATIONS = 200_000
# The few customers that have a password (everyone else checks out as a guest).
DEMO_ACCOUNTS: dict[str, str] = {
    "alice@example.com": "correct horse battery staple",
    "bob@example.com": "hunter2hunter2",
    "carol@example.com": "open sesame 42",
}
ZONES = ("domestic", "eu", "world")
CATEGORIES = ("books", "kitchen", "garden", "toys", "audio", "outdoor", "office", "apparel")
ADJECTIVES = (
    "compact", "deluxe", "classic", "rugged", "quiet", "bright", "modular", "vintage",
    "foldable", "wireless", "organic", "stainless", "handmade", "lightweight", "smart",
)
NOUNS = (
    "lamp", "kettle", "notebook", "speaker", "backpack", "planter", "puzzle", "jacket",
    "headphones", "tent", "mug", "desk", "blender", "kite", "trowel", "scarf", "chair",
)
TAGS = (
    "gift", "eco", "bestseller", "new", "sale", "premium", "kids", "travel", "home",
    "durable", "portable", "limited", "bundle", "refurbished", "handmade",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0),
    weight_grams INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    zone TEXT NOT NULL,
    password_salt BLOB,
    password_hash BLOB
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    created_at TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS order_items_order ON order_items(order_id);
CREATE INDEX IF NOT EXISTS orders_created ON orders(created_at);
"""


def db_path() -> str:
    return os.environ.get("SHOP_DB", "shop.db")


def connect() -> sqlite3.Connection:
    """A new connection; usable from whichever thread-pool thread runs the next step."""
    conn = sqlite3.connect(db_path(), timeout=30.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def fetch_all(conn: sqlite3.Connection, sql: str, params: Params = ()) -> list[sqlite3.Row]:
    with timer("db.query"):
        return conn.execute(sql, params).fetchall()


def fetch_one(conn: sqlite3.Connection, sql: str, params: Params = ()) -> sqlite3.Row | None:
    with timer("db.query"):
        row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
        return row


def execute(conn: sqlite3.Connection, sql: str, params: Params = ()) -> sqlite3.Cursor:
    with timer("db.query"):
        return conn.execute(sql, params)


def execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Params]) -> None:
    with timer("db.query"):
        conn.executemany(sql, rows)


def commit(conn: sqlite3.Connection) -> None:
    with timer("db.query"):
        conn.commit()


def fetch_chunks(
    conn: sqlite3.Connection, sql: str, params: Params = (), size: int = 500
) -> Iterator[list[sqlite3.Row]]:
    """Run ``sql`` and yield its rows ``size`` at a time, straight from the cursor."""
    with timer("db.query"):
        cursor = conn.execute(sql, params)
    while True:
        with timer("db.query"):
            rows = cursor.fetchmany(size)
        if not rows:
            return
        yield rows


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)


def init_db() -> None:
    """Create the schema and, if the database is empty, fill it with the deterministic seed.
    Several workers (uvicorn --workers N) start at once on the same file: the check and
    the seed are one write transaction, so one worker seeds and the others wait, then
    find the seed there."""
    conn = connect()
    try:
        with timer("db.query"):
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
        try:
            row = fetch_one(conn, "SELECT COUNT(*) AS n FROM products")
            if row is None or row["n"] == 0:
                _seed(conn)
            commit(conn)
        except BaseException:
            conn.rollback()
            raise
    finally:
        conn.close()


def _seed(conn: sqlite3.Connection) -> None:
    rng = random.Random(SEED)
    products = []
    for pid in range(1, N_PRODUCTS + 1):
        category = rng.choice(CATEGORIES)
        name = f"{rng.choice(ADJECTIVES).title()} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        tags = ",".join(sorted(rng.sample(TAGS, rng.randint(1, 5))))
        words = rng.choices(ADJECTIVES + NOUNS + TAGS, k=rng.randint(12, 30))
        description = f"A {name.lower()} for {category}: " + " ".join(words) + "."
        products.append((
            pid, f"SKU-{pid:05d}", name, category, description, tags,
            rng.randint(199, 49_999), rng.randint(0, 60), rng.randint(50, 12_000),
        ))
    execute_many(conn, "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", products)

    customers = []
    demo = list(DEMO_ACCOUNTS.items())
    for cid in range(1, N_CUSTOMERS + 1):
        salt: bytes | None = None
        digest: bytes | None = None
        if cid <= len(demo):
            email, password = demo[cid - 1]
            salt = hashlib.sha256(f"{SEED}:{cid}".encode()).digest()[:16]
            digest = hash_password(password, salt)
        else:
            email = f"customer{cid}@example.com"
        name = email.split("@")[0].title()
        customers.append((cid, name, email, rng.choice(ZONES), salt, digest))
    execute_many(conn, "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", customers)

    start = datetime(2024, 1, 1, tzinfo=UTC)
    prices = {p[0]: p[6] for p in products}
    orders, items = [], []
    item_id = 0
    for oid in range(1, N_ORDERS + 1):
        created = start + timedelta(minutes=oid * 67 + rng.randint(0, 60))
        status = rng.choices(("delivered", "shipped", "paid", "cancelled"), (70, 15, 10, 5))[0]
        orders.append((oid, rng.randint(1, N_CUSTOMERS), created.isoformat(), status))
        for product_id in rng.sample(range(1, N_PRODUCTS + 1), rng.randint(1, 5)):
            item_id += 1
            items.append((item_id, oid, product_id, rng.randint(1, 4), prices[product_id]))
    execute_many(conn, "INSERT INTO orders VALUES (?, ?, ?, ?)", orders)
    execute_many(conn, "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)", items)
