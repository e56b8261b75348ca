"""A FastAPI app behind apiprof's middleware whose requests wait in awaits, for the
await chains apiprof-spy reads (--async, dump).

GET /wait       fetch_rows() -> query_db() -> asyncio.sleep(0.2): waits, no CPU
GET /gathered   asyncio.gather() of two sleeps: waits on a _GatheringFuture
GET /stuck      held_request() -> hold() waits on an Event until GET /release sets it
GET /release    sets that Event
GET /health     nothing
"""

from __future__ import annotations

import asyncio

from apiprof.asgi import ProfilerMiddleware
from fastapi import FastAPI

app = FastAPI()
released = asyncio.Event()


async def query_db() -> int:
    await asyncio.sleep(0.2)  # AWAIT-SLEEP
    return 1


async def fetch_rows() -> int:
    return await query_db()  # AWAIT-QUERY


async def hold() -> None:
    await released.wait()  # AWAIT-EVENT


async def held_request() -> None:
    await hold()  # AWAIT-HOLD


@app.get("/wait")
async def wait() -> dict[str, int]:
    return {"rows": await fetch_rows()}  # AWAIT-FETCH


@app.get("/gathered")
async def gathered() -> dict[str, int]:
    await asyncio.gather(asyncio.sleep(0.2), asyncio.sleep(0.2))  # AWAIT-GATHER
    return {"ok": 1}


@app.get("/stuck")
async def stuck() -> dict[str, int]:
    await held_request()  # AWAIT-STUCK
    released.clear()
    return {"ok": 1}


@app.get("/release")
async def release() -> dict[str, int]:
    released.set()
    return {"ok": 1}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app.add_middleware(ProfilerMiddleware)
