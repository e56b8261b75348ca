"""A FastAPI app with one leaking route, for the memory profiler's leak suspects.

POST /ingest    keeps every request's payload in a module-level list (the leak)
POST /echo      reads the same payload, answers its size and keeps nothing
GET  /health    nothing
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()
KEPT: list[bytes] = []


@app.post("/ingest")
async def ingest(request: Request) -> dict[str, int]:
    body = await request.body()
    KEPT.append(body + b"\n")  # STORING_LINE
    return {"kept": len(KEPT)}


@app.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    body = await request.body()
    copy = body + b"\n"
    return {"size": len(copy)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
