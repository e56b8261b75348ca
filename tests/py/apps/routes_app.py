"""A FastAPI app for the middleware tests: async, sync, streamed, failing, templated and
websocket routes, instrumented with apiprof.fastapi.instrument(). Options come from the
environment (APIPROF_TEST_OPTIONS, JSON) so that each test server can differ."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import threading
import time

import apiprof.asgi
from apiprof.fastapi import instrument
from fastapi import APIRouter, Depends, FastAPI, WebSocket
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


# ---- per-request profiles: functions each kind of request calls, and nothing else does ----

PROFILED_PAUSE_S = 0.005
WAIT_S = 10.0  # how long one side waits for the other before giving up
_async_events: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}
_thread_events: dict[str, tuple[threading.Event, threading.Event]] = {}


def only_profiled() -> int:
    return 1


def only_others() -> int:
    return 1


def only_in_thread() -> int:
    return threading.get_ident()


def only_others_in_thread() -> int:
    return 1


def dependency_in_thread() -> int:
    """A sync dependency: FastAPI runs it in the thread pool."""
    return only_in_thread()


def _async_pair(key: str) -> tuple[asyncio.Event, asyncio.Event]:
    return _async_events.setdefault(key, (asyncio.Event(), asyncio.Event()))


def _thread_pair(key: str) -> tuple[threading.Event, threading.Event]:
    return _thread_events.setdefault(key, (threading.Event(), threading.Event()))


@app.get("/profiled/{key}/{n}")
async def profiled(key: str, n: int, tid: int = Depends(dependency_in_thread)) -> dict:
    """Calls only_profiled() n times, awaiting between calls while /other/{key} runs."""
    started, done = _async_pair(key)
    await asyncio.wait_for(started.wait(), WAIT_S)
    for _ in range(n):
        only_profiled()
        await asyncio.sleep(PROFILED_PAUSE_S)
    done.set()
    return {"calls": n, "dependency_thread": tid}


@app.get("/other/{key}")
async def other(key: str) -> dict[str, int]:
    """Calls only_others() until /profiled/{key} is done."""
    started, done = _async_pair(key)
    started.set()
    calls = 0
    while not done.is_set() and calls < WAIT_S / 0.001:
        calls += only_others()
        await asyncio.sleep(0.001)
    return {"calls": calls}


@app.get("/sync-profiled/{key}/{n}")
def sync_profiled(key: str, n: int) -> dict[str, int]:
    """A sync route (thread pool): calls only_in_thread() n times while /sync-other runs."""
    started, done = _thread_pair(key)
    started.wait(WAIT_S)
    for _ in range(n):
        only_in_thread()
        time.sleep(PROFILED_PAUSE_S)
    done.set()
    return {"calls": n}


@app.get("/sync-other/{key}")
def sync_other(key: str) -> dict[str, int]:
    started, done = _thread_pair(key)
    started.set()
    calls = 0
    while not done.wait(0.001) and calls < WAIT_S / 0.001:
        calls += only_others_in_thread()
    return {"calls": calls}


def slow_work() -> None:
    time.sleep(0)


@app.get("/slow")
async def slow() -> dict[str, int]:
    """Always slower than slow_ms=100: sleeps 200 ms."""
    await asyncio.sleep(0.2)
    slow_work()
    return {"ok": 1}


@app.get("/fast")
async def fast() -> dict[str, int]:
    return {"ok": 1}


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        text = await ws.receive_text()
        if text == "bye":
            await ws.close()
            return
        await ws.send_text(text.upper())


app.include_router(items)
options = json.loads(os.environ.get("APIPROF_TEST_OPTIONS", "{}"))
instrument(app, **options)
