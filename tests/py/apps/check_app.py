"""A small app for `apiprof check`: GET /items runs two SQLite statements per request,
GET /work sleeps 2 ms. CHECK_APP_SLOW=F multiplies the sleep by F (a planted slowdown);
CHECK_APP_EXTRA_QUERY=1 adds one statement to each /items request; CHECK_APP_EXTRA_ALLOC=1
makes each /work request allocate 256 KiB more (a planted allocation)."""

from __future__ import annotations

import os
import sqlite3
import time

from fastapi import FastAPI

SLOW = float(os.environ.get("CHECK_APP_SLOW", "1"))
EXTRA_QUERY = os.environ.get("CHECK_APP_EXTRA_QUERY") == "1"
EXTRA_ALLOC = os.environ.get("CHECK_APP_EXTRA_ALLOC") == "1"
WORK_S = 0.002

app = FastAPI()


def lookup(db: sqlite3.Connection, key: int) -> tuple[int] | None:
    row: tuple[int] | None = db.execute("SELECT ?", (key,)).fetchone()
    return row


def pause() -> None:
    time.sleep(WORK_S * SLOW)


@app.get("/items")
def items() -> dict[str, int]:
    db = sqlite3.connect(":memory:")
    try:
        rows = [lookup(db, i) for i in range(2)]
        if EXTRA_QUERY:
            rows.append(lookup(db, 99))
    finally:
        db.close()
    return {"rows": len(rows)}


@app.get("/work")
def work() -> dict[str, str]:
    pause()
    if EXTRA_ALLOC:
        scratch = bytearray(256 * 1024)
        return {"ok": "yes" if scratch[0] == 0 else "no"}
    return {"ok": "yes"}
