"""An app whose routes each wait on one known thing: an upstream HTTP service (network),
asyncio.sleep (sleep), a SQLite file (database), a file read (file)."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import httpx
from fastapi import FastAPI

app = FastAPI()
UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9")
DB = os.environ.get("WAITS_DB", "waits.db")
DATA = os.environ.get("WAITS_FILE", "waits.bin")
SLOW_QUERY = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
              "SELECT sum(x) FROM c")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/upstream")
async def upstream() -> dict[str, int]:
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(UPSTREAM + "/slow")
    return {"status": r.status_code}


@app.get("/sleep")
async def nap() -> dict[str, str]:
    await asyncio.sleep(0.05)
    return {"slept": "yes"}


@app.get("/db")
def query() -> dict[str, int]:
    with sqlite3.connect(DB) as conn:
        (total,) = conn.execute(SLOW_QUERY).fetchone()
    return {"sum": total}


@app.get("/file")
def read_file() -> dict[str, int]:
    n = 0
    for _ in range(20):
        with open(DATA, "rb") as f:
            n += len(f.read())
    return {"bytes": n}


# The upstream service /upstream calls, run as a server of its own (not profiled).
upstream_app = FastAPI()


@upstream_app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(0.05)
    return {"ok": "yes"}
