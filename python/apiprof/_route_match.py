"""Map request (method, path) pairs to the route templates of an ASGI app.

    python -m apiprof._route_match module:app < [[method, path], ...] > [{route, endpoint}, ...]

`apiprof bench --app` runs this in the app's directory, as the server is run, so that
importing the app has the same effects there and none in the bench process. Matching is
Starlette's own (``route.matches(scope)``, mounts followed), so FastAPI and Starlette apps
get the route the server would pick; other ASGI apps have no routes (``route`` None).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

Match = dict[str, Any]


def load_app(spec: str) -> Any:
    """The object named by ``module:attr`` (attr may be dotted), as uvicorn finds it."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def route_table(app: Any) -> list[Any] | None:
    """The app's routes; middleware that wraps an app (``.app``) is looked through."""
    seen = 0
    while not hasattr(app, "routes") and hasattr(app, "app") and seen < 32:
        app, seen = app.app, seen + 1
    routes = getattr(app, "routes", None)
    return list(routes) if routes is not None else None


def endpoint_of(route: Any) -> dict[str, Any] | None:
    """Where the route's endpoint function is: what the profile names it by."""
    code = getattr(getattr(route, "endpoint", None), "__code__", None)
    if code is None:
        return None
    return {"file": code.co_filename, "line": code.co_firstlineno, "qualname": code.co_qualname}


def template_of(route: Any) -> str:
    """A route's own template: ``path_format`` (convertors dropped, as Starlette keys
    ``url_path_for``), else ``path``."""
    tmpl = getattr(route, "path_format", None)
    return tmpl if isinstance(tmpl, str) else str(getattr(route, "path", ""))


def mount_prefix(route: Any) -> str:
    """The template a Mount puts before the routes inside it: its own path, parameters
    kept as templates (``/t/{tenant}``), without the ``/{path}`` that catches the rest."""
    tmpl = template_of(route)
    return tmpl[: -len("/{path}")] if tmpl.endswith("/{path}") else tmpl


def included_match(route: Any, scope: dict[str, Any], prefix: str) -> tuple[Any, Match | None]:
    """(Match kind, route) of a router that FastAPI (0.120 and later) keeps as one
    included-router entry (``include_router``; nested ones inside it): the route's full
    template, include prefixes included, as FastAPI's own matching picks it; found None
    when FastAPI offers no way to ask. Its own ``_match`` gives the kind too, so the
    entry's ``matches()`` (a second walk of the same routes) is not called."""
    pick = route._match
    kind = None
    for _ in range(32):  # included routers nest; each step goes one level down
        k, _, inner, context = pick(scope)
        kind = k if kind is None else kind
        if context is not None:
            if not template_of(context):  # a websocket route: the route FastAPI made for it
                context = getattr(context, "starlette_route", None) or context
            return kind, {"route": prefix + template_of(context),
                          "endpoint": endpoint_of(context)}
        pick = getattr(inner, "_match", None)
        if pick is None:
            break
    return kind, None


def match(routes: list[Any], scope: dict[str, Any], prefix: str = "",
          depth: int = 0) -> Match | None:
    """The first route that fully matches scope, else the first partial match (the method
    differs: the app answers 405, no endpoint runs), as Starlette's router decides.
    ``route`` is the full template: include prefixes, mount templates (parameters kept),
    sub-applications' routes; a mounted app without routes is its mount's template."""
    from starlette.routing import Host, Mount
    from starlette.routing import Match as M

    partial: Match | None = None
    for route in routes:
        found: Match | None
        if hasattr(route, "original_router") and hasattr(route, "_match"):
            kind, found = included_match(route, scope, prefix)  # FastAPI's included router
            if kind == M.NONE or found is None:
                continue
        else:
            kind, child = route.matches(scope)
            if kind == M.NONE:
                continue
            if isinstance(route, (Mount, Host)):
                inner_prefix = prefix + (mount_prefix(route) if isinstance(route, Mount)
                                         else "")
                sub = route_table(route.app) if depth < 32 else None
                if sub is None:  # a mounted app without routes: the mount is the route
                    found = {"route": prefix + template_of(route), "endpoint": None}
                else:
                    found = match(sub, {**scope, **child}, inner_prefix, depth + 1)
                    if found is None:
                        continue
            else:
                found = {"route": prefix + template_of(route), "endpoint": endpoint_of(route)}
        if kind == M.FULL:
            return found
        if partial is None:  # answered 405: the endpoint does not run
            partial = {**found, "endpoint": None}
    return partial


def count_routes(routes: list[Any], counts: dict[int, int] | None = None,
                 depth: int = 0) -> dict[int, int]:
    """How often each route object appears in the app's route tree (included routers and
    mounted apps looked into): one that appears twice (a router included at two
    prefixes, an app mounted twice) does not tell its template by itself."""
    from starlette.routing import Host, Mount

    counts = {} if counts is None else counts
    for route in routes:
        counts[id(route)] = counts.get(id(route), 0) + 1
        inner = getattr(route, "original_router", None)
        if inner is not None:
            sub = getattr(inner, "routes", None)
        elif isinstance(route, (Mount, Host)):
            sub = route_table(route.app)
        else:
            sub = None
        if sub and depth < 32:
            count_routes(list(sub), counts, depth + 1)
    return counts


def map_paths(app: Any, requests: list[tuple[str, str]]) -> list[Match]:
    routes = route_table(app)
    out: list[Match] = []
    for method, path in requests:
        found = None
        if routes is not None:
            scope = {"type": "http", "method": method, "path": path, "root_path": "",
                     "query_string": b"", "headers": []}
            found = match(routes, scope)
        out.append(found or {"route": None, "endpoint": None})
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m apiprof._route_match module:app", file=sys.stderr)
        return 2
    sys.path.insert(0, ".")
    try:
        app = load_app(sys.argv[1])
    except (ImportError, AttributeError) as e:
        print(f"cannot import {sys.argv[1]}: {e}", file=sys.stderr)
        return 1
    requests = [(str(m), str(p)) for m, p in json.load(sys.stdin)]
    json.dump(map_paths(app, requests), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
