"""A pure ASGI middleware that times every HTTP request under ``"METHOD /route/{template}"``.

The route template is resolved before the request is handed on, by matching the scope
against the application's routes the same way the router will; timers opened further
down (``db.query``) therefore nest under the route's timer.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shop.timing import timer


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match == Match.FULL:
            return str(path) if path is not None else "<unnamed>"
        if match == Match.PARTIAL and partial is None and path is not None:
            partial = str(path)  # path matched, method did not (the router answers 405)
    return partial or "<unmatched>"


class RouteTimer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        router = getattr(scope.get("app"), "router", None)
        routes: list[BaseRoute] = list(getattr(router, "routes", []))
        with timer(f"{scope['method']} {route_template(routes, scope)}"):
            await self.app(scope, receive, send)
