"""A FastAPI app for the middleware's request memory (memory=True): one async route and
one sync route keep what each request allocates, one route allocates as much and keeps
nothing. ProfilerMiddleware options come from $APIPROF_TEST_OPTIONS (JSON).

GET /keep      keeps a 10 KiB bytearray per request (async: runs on the event loop)
GET /keep-sync keeps a 10 KiB bytearray per request (sync: runs in the thread pool)
GET /churn     allocates ten 10 KiB bytearrays per request and keeps none
GET /kept      how many arrays are kept
"""

from __future__ import annotations

import json
import os

from apiprof.asgi import ProfilerMiddleware
from fastapi import FastAPI

BLOCK = 10 * 1024
app = FastAPI()
KEPT: list[bytearray] = []


@app.get("/keep")
async def keep() -> dict[str, int]:
    KEPT.append(bytearray(BLOCK))
    return {"kept": len(KEPT)}


@app.get("/keep-sync")
def keep_sync() -> dict[str, int]:
    KEPT.append(bytearray(BLOCK))
    return {"kept": len(KEPT)}


@app.get("/churn")
async def churn() -> dict[str, int]:
    total = 0
    for _ in range(10):
        total += len(bytearray(BLOCK))
    return {"size": total}


@app.get("/kept")
async def kept() -> dict[str, int]:
    return {"kept": len(KEPT)}


app.add_middleware(ProfilerMiddleware,  # type: ignore[arg-type]
                   **json.loads(os.environ.get("APIPROF_TEST_OPTIONS", "{}")))
