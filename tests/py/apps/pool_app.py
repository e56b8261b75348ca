"""A FastAPI app whose thread pool has 2 threads (anyio's default limiter, 2 tokens):
GET /slow is a sync route that sleeps 200 ms, so of N concurrent calls all but 2 wait
for a thread; GET /quick is a sync route that returns at once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

POOL = 2


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = POOL
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/slow")
def slow() -> dict[str, str]:
    time.sleep(0.2)
    return {"slept": "yes"}


@app.get("/quick")
def quick() -> dict[str, str]:
    return {"quick": "yes"}
