"""The slow-request capture cannot be held by a client: a trickled body is read before a
candidate's profile starts, a candidate's profile is cut after slow_max_s, and an
on-demand request cuts it rather than waiting. A real uvicorn in a thread, real sockets."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from apiprof.asgi import ProfilerMiddleware
from apiprof.asgi.request_profile import FunctionProfile
from conftest import free_port

TOKEN = "t0ken-for-capture-tests"


class Events:
    """What the request profilers were asked to do, in order, with whether the request
    they profile had finished its handler by then."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, bool]] = []
        self.done: set[str] = set()


EVENTS = Events()


# The path of the request whose context this is (set before the middleware runs).
CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current_path")


class LoggingProfile:
    """The default RequestProfiler (the real tracer), its calls recorded."""

    def __init__(self) -> None:
        self.path = ""
        self.profile = FunctionProfile()
        self.stopped = False

    def start(self) -> None:
        self.profile.start()
        EVENTS.log.append(("start", CURRENT.get(""), False))
        self.path = CURRENT.get("")

    def stop(self) -> None:
        self.profile.stop()
        if not self.stopped:
            self.stopped = True
            EVENTS.log.append(("stop", self.path, self.path in EVENTS.done))

    def result(self, info: dict[str, str]) -> bytes:
        return self.profile.result(info)


RELEASE: dict[str, asyncio.Event] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    path = scope["path"]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if path == "/slow":
        await asyncio.sleep(0.1)
    elif path.startswith("/wait/"):
        event = RELEASE.setdefault(path, asyncio.Event())
        await event.wait()
    elif path.startswith("/release/"):
        RELEASE.setdefault("/wait/" + path.split("/")[2], asyncio.Event()).set()
    EVENTS.done.add(path)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def tagged(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        CURRENT.set(scope["path"])
    await MIDDLEWARE(scope, receive, send)


MIDDLEWARE: Any = None


@pytest.fixture
def server() -> Iterator[tuple[str, ProfilerMiddleware]]:
    global MIDDLEWARE
    EVENTS.log.clear()
    EVENTS.done.clear()
    RELEASE.clear()
    MIDDLEWARE = ProfilerMiddleware(app, token=TOKEN, slow_ms=50, slow_interval_s=0,
                                    slow_max_s=0.5, profiler=LoggingProfile)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(tagged, host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", MIDDLEWARE
    srv.should_exit = True
    thread.join(30)


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_trickled_body_is_not_profiled(server):
    url, mw = server
    port = int(url.rsplit(":", 1)[1])
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
        assert client.get("/slow").status_code == 200       # arms the capture
        assert EVENTS.log == []
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            for byte in b"01234":
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
            wait_for(lambda: mw.slow_candidates == 1, "the upload was not taken as candidate")
            # it is the candidate, yet while it trickles nothing is profiled ...
            assert client.get("/health").status_code == 200
            assert EVENTS.log == []
            sock.sendall(b"56789")                          # ... its body is whole
            reply = b""
            while not reply.endswith(b"0123456789"):
                chunk = sock.recv(4096)
                assert chunk, reply
                reply += chunk
    # the profile stops after the response's last byte is sent: the client may see it first
    wait_for(lambda: len(EVENTS.log) == 2, "the candidate's profile did not stop")
    assert EVENTS.log == [("start", "/upload", False), ("stop", "/upload", True)]
    assert mw.slow_candidates == 1 and mw.slow_kept == 0


def test_a_candidate_is_cut_after_slow_max_s(server):
    url, mw = server
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
        assert client.get("/slow").status_code == 200
        waiting = threading.Thread(target=lambda: client.get("/wait/a"))
        waiting.start()
        wait_for(lambda: len(EVENTS.log) == 2, "the candidate was not cut")
        assert EVENTS.log == [("start", "/wait/a", False), ("stop", "/wait/a", False)]
        assert client.get("/release/a").status_code == 200
        waiting.join(30)
    assert mw.slow_candidates == 1 and mw.slow_kept == 0
    assert mw.profiles.index() == []


def test_an_on_demand_request_cuts_the_candidate(server):
    url, mw = server
    mw._slow.max_ns = 3600 * 10**9  # only the on-demand request can end this candidate
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
        assert client.get("/slow").status_code == 200
        waiting = threading.Thread(target=lambda: client.get("/wait/b"))
        waiting.start()
        wait_for(lambda: len(EVENTS.log) == 1, "the candidate did not start")
        r = client.get("/ondemand", headers={"x-apiprof-token": TOKEN})
        assert r.status_code == 200 and r.headers["x-apiprof-profile"]
        wait_for(lambda: len(EVENTS.log) == 4, "the on-demand profile did not stop")
        assert EVENTS.log == [("start", "/wait/b", False), ("stop", "/wait/b", False),
                              ("start", "/ondemand", False), ("stop", "/ondemand", True)]
        assert client.get("/release/b").status_code == 200
        waiting.join(30)
    assert mw.slow_kept == 0
    [kept] = mw.profiles.index()
    assert kept["kind"] == "request" and "error" not in kept  # the tracer was free
