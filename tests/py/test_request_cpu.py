"""A request's CPU time never exceeds its wall time: an app that keeps computing after
its last body chunk (the wall time ends there) still reports CPU <= wall."""

from __future__ import annotations

import asyncio
import time

from apiprof.asgi import ProfilerMiddleware

TOKEN = "cpu-wall-token-0123456789abcdef"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
    t = time.thread_time()
    while time.thread_time() - t < 0.03:   # 30 ms of CPU after the response is complete
        pass


def test_cpu_never_exceeds_wall():
    mw = ProfilerMiddleware(app, token=TOKEN)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/spin", "raw_path": b"/spin",
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"x"), (b"x-apiprof-token", TOKEN.encode())]}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    records = mw.profiles.index()
    assert records, sent
    r = records[-1] if isinstance(records, list) else list(records.values())[-1]
    assert 0 < r["cpu_ns"] <= r["wall_ns"], r
