"""The upstream service of calls_app.py: a user by id, and a 50 ms slow answer."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

app = FastAPI()


@app.get("/users/{user_id}")
async def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(0.05)
    return {"ok": "slow"}
