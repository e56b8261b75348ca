"""A FastAPI app behind apiprof's middleware whose requests wait in awaits, for the
await chains apiprof-spy reads (--async, dump).

GET /wait       fetch_rows() -> query_db() -> asyncio.sleep(0.2): waits, no CPU
GET /gathered   asyncio.gather() of two sleeps: waits on a _GatheringFuture
GET /stuck      held_request() -> hold() waits on an Event until GET /release sets it
GET /release    sets that Event
GET /burn       runs on the CPU for 0.3 s in the event loop's thread
GET /cleanup    a dependency with yield (an async generator) whose cleanup waits on the
                Event until GET /release
GET /spawn      starts a task "bg-ticker": ticker() -> hold(), until GET /release
GET /spin       starts a task "spinner" that runs spin() on the CPU for 6 s (with a
                yield to the loop after each 10 ms)
GET /health     nothing
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from apiprof.asgi import ProfilerMiddleware
from fastapi import Depends, FastAPI

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


async def ticker() -> None:
    await hold()  # AWAIT-TICKER


background: set[asyncio.Task[None]] = set()


@app.get("/spawn")
async def spawn() -> dict[str, int]:
    task = asyncio.create_task(ticker(), name="bg-ticker")
    background.add(task)
    task.add_done_callback(background.discard)
    return {"ok": 1}


async def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        step = time.monotonic() + 0.01
        while time.monotonic() < step:
            pass  # SPIN
        await asyncio.sleep(0)


@app.get("/spin")
async def start_spin() -> dict[str, int]:
    task = asyncio.create_task(spin(6), name="spinner")
    background.add(task)
    task.add_done_callback(background.discard)
    return {"ok": 1}


@app.get("/burn")
async def burn() -> dict[str, int]:
    end, n = time.monotonic() + 0.3, 0
    while time.monotonic() < end:
        n += 1  # BURN
    return {"n": n}


async def session() -> AsyncIterator[int]:
    yield 1
    await released.wait()  # AWAIT-CLEANUP


@app.get("/cleanup")
async def cleanup(s: int = Depends(session)) -> dict[str, int]:
    return {"s": s}


@app.get("/release")
async def release() -> dict[str, int]:
    released.set()
    return {"ok": 1}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app.add_middleware(ProfilerMiddleware)
