"""A FastAPI app for the concurrency tests: an async route whose helper, two calls deep,
blocks the event loop; one that holds it computing; an async route that awaits properly;
a fast route; and a sync route whose requests contend on a threading.Lock held during a
slow section."""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import FastAPI

app = FastAPI()

BLOCK_S = 0.15  # how long /blocking holds the event loop
HOLD_S = 0.05  # how long /locked holds the lock
_LOCK = threading.Lock()


def pause_loop() -> None:
    time.sleep(BLOCK_S)  # the planted blocking call (tests find this line)


def prepare_report() -> None:
    pause_loop()


@app.get("/blocking")
async def blocking() -> dict[str, str]:
    await asyncio.sleep(0.001)
    prepare_report()
    return {"ok": "yes"}


def crunch() -> int:
    end, total = time.perf_counter() + BLOCK_S, 0
    while time.perf_counter() < end:  # the planted CPU-bound loop (tests find these lines)
        total += sum(i * i for i in range(200))
    return total


@app.get("/spin")
async def spin() -> dict[str, int]:
    return {"total": crunch()}


@app.get("/awaiting")
async def awaiting() -> dict[str, str]:
    await asyncio.sleep(BLOCK_S)
    return {"ok": "yes"}


@app.get("/fast")
async def fast() -> dict[str, int]:
    return {"sum": sum(range(100))}


def slow_section() -> int:
    time.sleep(HOLD_S)
    return 1


@app.get("/locked")
def locked() -> dict[str, int]:
    with _LOCK:  # the contended acquisition (tests find this line)
        n = slow_section()
    return {"n": n}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
