"""Every routing shape FastAPI and Starlette produce, for the route-template tests: routers
included into routers with prefixes, an APIRoute subclass, mounts with and without path
parameters, a mounted sub-application (itself with included routers), a mounted app
behind middleware, a mounted app without routes, and websocket routes. ``EXPECTED`` lists
(method, path, template) for each; ``WS_EXPECTED`` the websocket ones.

With APIPROF_TEST_STATS set, the app is wrapped in ProfilerMiddleware (statistics only)
and answers ``/_stats`` with them."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute


class TimedRoute(APIRoute):
    """A route class of the app's own, as apps add for logging or timing."""


def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def create_item() -> dict[str, str]:
    return {"made": "yes"}


def read_user(user_id: str) -> dict[str, str]:
    return {"user": user_id}


def read_report(report_id: int) -> dict[str, int]:
    return {"report": report_id}


def read_shared(n: int) -> dict[str, int]:
    return {"n": n}


def health() -> dict[str, str]:
    return {"ok": "yes"}


async def tenant_order(request: Any) -> JSONResponse:
    return JSONResponse(dict(request.path_params))


async def static_file(request: Any) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["name"])


async def raw_app(scope: Any, receive: Any, send: Any) -> None:
    """A mounted ASGI app with no routes of its own."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw"})


async def room(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(ws.path_params["room"])
    await ws.close()


items = APIRouter(prefix="/items")
items.get("/{item_id}")(read_item)
items.post("/")(create_item)
users = APIRouter(prefix="/users", route_class=TimedRoute)
users.get("/{user_id}")(read_user)
users.websocket("/{user_id}/ws/{room}")(room)
api = APIRouter(prefix="/api/v1")
api.include_router(items)
api.include_router(users)

sub = FastAPI()  # a sub-application with its own included router
sub_router = APIRouter(prefix="/reports")
sub_router.get("/{report_id}")(read_report)
sub.include_router(sub_router)


class HeaderMiddleware:
    """A pure ASGI middleware in front of a mounted sub-application (the shape of
    GZipMiddleware and the like), adding one response header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-wrapped", b"1")]
            await send(message)

        await self.app(scope, receive, send_with_header)


app = FastAPI()
app.include_router(api)
app.get("/health")(health)
app.websocket("/ws/{room}")(room)
app.mount("/t/{tenant}", Starlette(routes=[
    Route("/orders/{order_id:int}", tenant_order),
    Mount("/files", routes=[Route("/{name}", static_file)]),
    WebSocketRoute("/ws/{room}", room),
]))
app.mount("/sub", sub)
app.mount("/zipped", Starlette(routes=[Route("/{name}", static_file)],
                               middleware=[Middleware(HeaderMiddleware)]))
app.mount("/raw", raw_app)
shared = APIRouter(prefix="/shared")  # one router included at two prefixes
shared.get("/{n}")(read_shared)
app.include_router(shared, prefix="/v1")
app.include_router(shared, prefix="/{version}")

EXPECTED: list[tuple[str, str, str]] = [
    ("GET", "/api/v1/items/3", "/api/v1/items/{item_id}"),
    ("POST", "/api/v1/items/", "/api/v1/items/"),
    ("GET", "/api/v1/users/ann", "/api/v1/users/{user_id}"),
    ("GET", "/health", "/health"),
    ("GET", "/t/acme/orders/7", "/t/{tenant}/orders/{order_id}"),
    ("GET", "/t/zeta/orders/8", "/t/{tenant}/orders/{order_id}"),
    ("GET", "/t/acme/files/a.txt", "/t/{tenant}/files/{name}"),
    ("GET", "/sub/reports/5", "/sub/reports/{report_id}"),
    ("GET", "/zipped/b.txt", "/zipped/{name}"),
    ("GET", "/raw/any/thing", "/raw/{path}"),
    ("GET", "/v2/shared/1", "/{version}/shared/{n}"),  # first: its route object is shared
    ("GET", "/v1/shared/2", "/v1/shared/{n}"),
    ("GET", "/v3/shared/3", "/{version}/shared/{n}"),
]
WS_EXPECTED: list[tuple[str, str]] = [
    ("/ws/lobby", "/ws/{room}"),
    ("/api/v1/users/ann/ws/lobby", "/api/v1/users/{user_id}/ws/{room}"),
    ("/t/acme/ws/lobby", "/t/{tenant}/ws/{room}"),
]

if os.environ.get("APIPROF_TEST_STATS"):
    import apiprof.asgi

    inner = app

    async def with_stats(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_stats":
            await JSONResponse(apiprof.asgi.stats())(scope, receive, send)
            return
        await profiled(scope, receive, send)

    profiled = apiprof.asgi.ProfilerMiddleware(inner)
    app = with_stats  # type: ignore[assignment]
