"""The middleware's requests that record themselves (RouteTable.request with a
RouteFinder, src/ext/routes.c): once, under the route the router picked, when the app's
coroutine returns, raises or is closed, and also when the app fails before its first step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from apiprof import _core, _labels
from apiprof.asgi import ProfilerMiddleware
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


def scope_of(path: str, method: str = "GET", root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": root_path, "headers": [(b"host", b"t")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def item(request: Any) -> PlainTextResponse:
    return PlainTextResponse("x" * int(next(iter(request.path_params.values()))))


async def boom(request: Any) -> PlainTextResponse:
    raise RuntimeError("boom")


def app() -> Starlette:
    inner = Starlette(routes=[Route("/deep/{n}", item)])
    return Starlette(routes=[Route("/items/{n}", item), Route("/boom", boom),
                             Mount("/sub", app=inner)])


async def call(asgi: Any, path: str, root_path: str = "") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await asgi(scope_of(path, root_path=root_path), receive, send)
    except RuntimeError:
        pass
    return sent


def rows(table: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["route"], r["method"], r["status"]): r for r in table.snapshot()}


def test_routes_cached_and_not_give_the_same_rows():
    """The first request of a path (scope copied, the finder matches), the next ones (the
    template cached on arrival, the route object's regex, the memo of the last fit) and
    other paths of the same route all land on the route's template, exactly counted."""
    mw = ProfilerMiddleware(app())
    mw.table.reset()

    async def run() -> None:
        for n in (3, 3, 3, 5, 7, 3):
            await call(mw, f"/items/{n}")
        for n in (2, 2):
            await call(mw, f"/sub/deep/{n}")
        await call(mw, "/nowhere")
        await call(mw, "/nowhere")
    asyncio.run(run())
    got = rows(mw.table)
    items = got[("/items/{n}", "GET", "2xx")]
    assert items["count"] == 6 and items["bytes_out"] == 3 + 3 + 3 + 5 + 7 + 3
    assert got[("/sub/deep/{n}", "GET", "2xx")]["count"] == 2
    assert got[("<unmatched>", "GET", "4xx")]["count"] == 2
    assert all(r["cpu_ns"] <= r["total_ns"] for r in got.values())


def test_two_middlewares_share_the_table_not_their_routes():
    """One table per process, one RouteFinder per middleware: the same path under two
    apps is recorded under each app's own template."""
    first = ProfilerMiddleware(Starlette(routes=[Route("/a/{x}", item)]))
    second = ProfilerMiddleware(Starlette(routes=[Route("/a/{n}", item)]))
    first.table.reset()

    async def run() -> None:
        for mw in (first, second, first, second, second):
            await call(mw, "/a/4")
    asyncio.run(run())
    got = rows(first.table)
    assert got[("/a/{x}", "GET", "2xx")]["count"] == 2
    assert got[("/a/{n}", "GET", "2xx")]["count"] == 3


def test_app_errors_are_recorded_once():
    """An exception inside the app's coroutine, and one raised by the app's call before
    any step: each request counted once as a 5xx error, and the exception propagates."""
    def fails_at_call(scope: Any, receive: Any, send: Any) -> Any:
        raise RuntimeError("before the first step")

    mw = ProfilerMiddleware(app())
    early = ProfilerMiddleware(fails_at_call)
    mw.table.reset()
    asyncio.run(call(mw, "/boom"))
    with pytest.raises(RuntimeError, match="before the first step"):
        asyncio.run(early(scope_of("/x"), None, None))  # type: ignore[arg-type]
    got = rows(mw.table)
    assert got[("/boom", "GET", "5xx")]["count"] == 1
    assert got[("/boom", "GET", "5xx")]["errors"] == 1
    assert got[("<unmatched>", "GET", "5xx")]["count"] == 1


def test_self_finishing_request_protocol():
    """run() drives the coroutine; its end records the request under the finder's route;
    finish() afterwards returns that label instead of raising; a closed request counts as
    failed with no response, as an exception would (5xx, one error)."""
    table = _core.RouteTable(16)
    finder = _labels.RouteFinder(app())

    async def ok(send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"abc"})

    async def server_send(message: Any) -> None:
        pass

    async def one() -> Any:
        req = table.request(scope_of("/items/1"), server_send, False, finder)
        await req.run(ok(req))
        return req
    req = asyncio.run(one())
    assert req.status == 201 and req.bytes_out == 3
    # no router ran (no scope["route"]): the finder's own match of the path
    assert req.finish(False) == "/items/{n}"
    assert rows(table)[("/items/{n}", "GET", "2xx")]["count"] == 1

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def closed() -> None:
        req = table.request(scope_of("/items/2"), server_send, False, finder)
        awaitable = req.run(forever())
        awaitable.send(None)  # the first step: the coroutine waits on a future
        awaitable.close()
    asyncio.run(closed())
    got = rows(table)
    assert got[("/items/{n}", "GET", "5xx")]["count"] == 1
    assert got[("/items/{n}", "GET", "5xx")]["errors"] == 1
