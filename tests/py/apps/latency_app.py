"""Routes of known latency, for the per-route latency tests.

GET /health        async, returns at once
GET /cpu1 .. /cpu3 sync (thread pool): 5 ms of CPU each, the routes with the most work
GET /wait          async: awaits asyncio.sleep(WAIT_S), hardly any work, the slowest by p95
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI

WAIT_S = 0.4
app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def spin(ms: int) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


@app.get("/cpu1")
def cpu1() -> dict[str, int]:
    spin(5)
    return {"ms": 5}


@app.get("/cpu2")
def cpu2() -> dict[str, int]:
    spin(5)
    return {"ms": 5}


@app.get("/cpu3")
def cpu3() -> dict[str, int]:
    spin(5)
    return {"ms": 5}


@app.get("/wait")
async def wait() -> dict[str, float]:
    await asyncio.sleep(WAIT_S)
    return {"s": WAIT_S}
