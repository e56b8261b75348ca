"""An async FastAPI app behind apiprof's middleware for sampler_async.py: each request
waits 50 ms in an await five coroutines down (a database call would), so under wrk
many requests are in flight, suspended, at any moment."""

from __future__ import annotations

import asyncio

from apiprof.asgi import ProfilerMiddleware
from fastapi import FastAPI

app = FastAPI()


async def query(depth: int) -> int:
    if depth == 0:
        await asyncio.sleep(0.05)
        return 1
    return await query(depth - 1)


@app.get("/wait")
async def wait() -> dict[str, int]:
    return {"rows": await query(4)}


app.add_middleware(ProfilerMiddleware)
