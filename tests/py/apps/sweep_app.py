"""App for the load sweep: one route that serialises on a lock held 15 ms (capacity about
66 req/s), one that awaits 20 ms and holds nothing."""

import asyncio
import threading
import time

from fastapi import FastAPI

app = FastAPI()
_lock = threading.Lock()


@app.get("/locked")
def locked() -> dict[str, bool]:
    with _lock:
        time.sleep(0.015)
    return {"ok": True}


@app.get("/sleep")
async def sleep() -> dict[str, bool]:
    await asyncio.sleep(0.02)
    return {"ok": True}
