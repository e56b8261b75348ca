"""A FastAPI app with one CPU-bound route, for sampling a live server from outside.

GET /hot     async route (runs on the event loop thread): burn() for about 20 ms
GET /health  async route: nothing
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


def burn(n: int) -> int:
    """The hot spot: pure Python arithmetic, no I/O."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@app.get("/hot")
async def hot() -> dict[str, int]:
    return {"v": burn(200_000)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
