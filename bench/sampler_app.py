"""A FastAPI app for sampler_overhead.py: one route with a little Python work per request
(building and serialising a list of dicts), as a typical JSON endpoint does."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


def rows(n: int) -> list[dict[str, object]]:
    return [{"id": i, "name": f"item-{i}", "price": i * 1.25, "tags": ["a", "b"]} for i in range(n)]


@app.get("/items")
async def items() -> list[dict[str, object]]:
    return rows(50)
