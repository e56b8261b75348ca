"""A FastAPI app for the middleware tests: async, sync, streamed, failing, templated and
websocket routes, instrumented with apiprof.fastapi.instrument(). Options come from the
environment (APIPROF_TEST_OPTIONS, JSON) so that each test server can differ."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import time

import apiprof.asgi
from apiprof.fastapi import instrument
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse

REQUEST_TAG: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="")
STREAM_CHUNKS = 20
STREAM_CHUNK = b"0123456789abcdef" * 64  # 1 KiB
STREAM_PAUSE_S = 0.01


class Boom(Exception):
    """Raised by /boom; its message is checked in the server log."""


app = FastAPI()
items = APIRouter(prefix="/api")


@app.get("/")
async def root() -> dict[str, str]:
    return {"ok": "yes"}


@items.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@items.get("/sync/{n}")
def sync_work(n: int) -> dict[str, int]:
    return {"sum": sum(range(n))}


@app.get("/cpu")
async def cpu_bound() -> dict[str, int]:
    deadline = time.thread_time() + 0.02  # 20 ms of CPU on the event loop
    while time.thread_time() < deadline:
        pass
    return {"ok": 1}


@app.get("/sleep")
async def sleeping() -> dict[str, int]:
    await asyncio.sleep(0.05)
    return {"ok": 1}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks():
        for _ in range(STREAM_CHUNKS):
            await asyncio.sleep(STREAM_PAUSE_S)
            yield STREAM_CHUNK

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.get("/boom")
async def boom() -> None:
    raise Boom("kaboom from the route")


@app.get("/ctx")
async def ctx() -> PlainTextResponse:
    REQUEST_TAG.set("set-in-route")
    await asyncio.sleep(0)
    return PlainTextResponse(REQUEST_TAG.get())


@app.get("/stats")
async def route_stats() -> dict:
    return apiprof.asgi.stats()


@app.post("/reset")
async def reset_stats() -> dict[str, bool]:
    apiprof.asgi.reset()
    return {"reset": True}


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        text = await ws.receive_text()
        if text == "bye":
            await ws.close()
            return
        await ws.send_text(text.upper())


class CallRecorder:
    """A RequestProfiler plugged in through the public ``profiler=`` seam. It profiles
    nothing: it records which task started and stopped it, so the tests can check when
    the middleware calls a request profiler without depending on apiprof.Profiler."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append(f"start in {asyncio.current_task().get_name()}")

    def stop(self) -> None:
        self.calls.append(f"stop in {asyncio.current_task().get_name()}")

    def result(self) -> dict:
        return {"kind": "calls", "calls": self.calls}


app.include_router(items)
options = json.loads(os.environ.get("APIPROF_TEST_OPTIONS", "{}"))
if os.environ.get("APIPROF_TEST_PROFILER") == "calls":
    options["profiler"] = CallRecorder
instrument(app, **options)
