"""A FastAPI app that calls an upstream service (UPSTREAM, http://host:port) with each
HTTP client: /fanout asks for 6 users one by one (a repeated call planted on purpose);
the others make one call each; /slow awaits a 50 ms upstream answer."""

from __future__ import annotations

import os

import aiohttp
import httpx
import requests
from fastapi import FastAPI

UPSTREAM = os.environ["UPSTREAM"]
USERS = 6
app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/fanout")
async def fanout() -> list[int]:
    async with httpx.AsyncClient() as client:
        out = []
        for i in range(USERS):
            r = await client.get(f"{UPSTREAM}/users/{i}", params={"token": "s3cret"})
            out.append(r.json()["id"])
        return out


@app.get("/httpx-sync")
def httpx_sync() -> int:
    with httpx.Client() as client:
        return int(client.get(f"{UPSTREAM}/users/1").json()["id"])


@app.get("/requests")
def with_requests() -> int:
    return int(requests.get(f"{UPSTREAM}/users/2?key=s3cret", timeout=10).json()["id"])


@app.get("/aiohttp")
async def with_aiohttp() -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{UPSTREAM}/users/3") as r:
            return int((await r.json())["id"])


@app.get("/slow")
async def slow() -> str:
    async with httpx.AsyncClient() as client:
        return str((await client.get(f"{UPSTREAM}/slow")).json()["ok"])
