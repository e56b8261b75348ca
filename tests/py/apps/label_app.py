"""A FastAPI app for the route-label tests: an async route, a sync route with a sync
dependency (both run in the thread pool) and an async route that starts a named task.
With APIPROF_LABELS_MIDDLEWARE=1 in the environment, apiprof's middleware is added."""

from __future__ import annotations

import asyncio
import os

from fastapi import Depends, FastAPI

app = FastAPI()


def item_work(item_id: int) -> int:
    return sum(range(item_id))


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id, "sum": item_work(item_id)}


def sync_dep(n: int) -> int:
    return n * 2


@app.get("/sync/{n}")
def sync_total(n: int, doubled: int = Depends(sync_dep)) -> dict[str, int]:
    return {"total": sum(range(doubled))}


async def task_body() -> int:
    await asyncio.sleep(0)
    return item_work(10)


@app.get("/spawn")
async def spawn() -> dict[str, int]:
    return {"r": await asyncio.create_task(task_body(), name="spawned-work")}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"ok": "yes"}


if os.environ.get("APIPROF_LABELS_MIDDLEWARE") == "1":
    from apiprof.fastapi import instrument

    instrument(app)
