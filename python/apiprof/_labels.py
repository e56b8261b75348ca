"""Route labels for the function tracer: the ASGI side.

A profiler started with ``labels=True`` records the work done while the current
contextvars context holds a route in ``ROUTE`` into trees labelled ``route=<route>``
(the C side is src/ext/labels.c). The route is ``"METHOD template"``, e.g.
``GET /items/{item_id}``, the template the middleware's statistics use. It is set
before the app is called, so the route is found up front with Starlette's own
matching (``_route_match.match``, through ``RouteFinder``), as the router will find it;
while that runs the context holds ``PAUSED`` and nothing is recorded (it is the
profiler's work, not the app's). A request's task, the tasks it starts and its
thread-pool calls copy the context and so carry the label.

``RouteLabels(app)`` is that layer as an ASGI app; ``apiprof run`` wraps the app
uvicorn loads with it (``install_uvicorn_hook``), and the middleware sets the same
label itself. Both do it only while a labelling profiler runs (``active``).
"""

from __future__ import annotations

import contextvars
import importlib.abc
import importlib.machinery
import itertools
import re
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from types import ModuleType
from typing import Any

from . import _core
from ._route_match import count_routes, match, route_table

ROUTE: contextvars.ContextVar[object] = contextvars.ContextVar("apiprof_route")
PAUSED = object()
# The request a context serves: a serial set with its route label (0: none); captured
# database statements are counted per request with it (apiprof._queries).
REQUEST: contextvars.ContextVar[int] = contextvars.ContextVar("apiprof_request", default=0)
_requests = itertools.count(1)

# Route labels on apiprof-spy's board, each added once: label -> index + 1 (0: no room).
_spy_labels: dict[str, int] = {}

# Labelling profilers running now (Profiler.start/stop keep it).
active = 0

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class RouteFinder:
    """Finds the route template of a request or websocket scope in ``app`` (its routes
    are looked up at the first request, when the app is built): the one lookup behind
    the tracer's route labels, the middleware's statistics and ``apiprof bench``."""

    CACHE_SIZE = 4096  # (type, method, root_path, path) -> template; cleared when full

    def __init__(self, app: Any) -> None:
        self.app = app
        self._routes: list[Any] | None = None
        self._looked = False
        self._cacheable = True
        self._cache: dict[tuple[Any, ...], str | None] = {}
        # id(route object the router left in scope["route"]) -> (that object, its one
        # template or None when it was found under two, the template's path regex)
        self._leaves: dict[int, tuple[object, str | None, re.Pattern[str] | None]] = {}
        self._counts: dict[int, int] | None = None  # count_routes() of the app's routes

    def template(self, scope: Scope) -> str | None:
        """The full template of the route the app's router will pick (None when no route
        matches, the app has no routes, or matching fails: it never fails a request)."""
        key = (scope.get("type"), scope.get("method"), scope.get("root_path"),
               scope.get("path"))
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        try:
            if not self._looked:
                self._routes, self._looked = route_table(self.app), True
                self._cacheable = not any(isinstance(r, _host_type())
                                          for r in self._routes or ())
            if self._routes is not None:
                hit = match(self._routes, dict(scope))
                if hit is not None:
                    found = hit["route"]
        except Exception:  # the app's router will answer this request as it sees fit
            return None
        if self._cacheable:  # a Host route picks by header: not cached
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def routed(self, before: Scope, leaf: object,
               known: tuple[str | None] | None = None) -> str | None:
        """The template of a request the app has routed: ``before`` is a copy of its scope
        made before the app ran, ``leaf`` what the router left in ``scope["route"]`` (None
        if nothing); ``known``, when given, is ``(self.template(before),)`` taken before the
        app ran (the middleware's requests, src/ext/routes.c: ``before`` then holds only
        the path and root_path). A route object seen before under one template answers without a
        match when that template fits the path (a new ``/items/{id}`` costs one regex
        match, not a walk of the routes); one seen under two templates (a route object
        included at two prefixes, an app mounted twice) is matched every time."""
        if leaf is None:
            return known[0] if known is not None else self.template(before)
        if self._counts is None:
            try:
                self._counts = count_routes(route_table(self.app) or [])
            except Exception:  # no Starlette: nothing is cached by route object
                self._counts = {}
        seen = self._leaves.get(id(leaf))
        if seen is not None and seen[0] is leaf and seen[2] is not None:
            path = str(before.get("path", ""))
            root = str(before.get("root_path", ""))
            if seen[2].fullmatch(path[len(root):] if root and path.startswith(root) else path):
                return seen[1]
        found = known[0] if known is not None else self.template(before)
        if found is None:
            return None
        if seen is not None and seen[0] is leaf:
            if seen[1] != found:
                self._leaves[id(leaf)] = (leaf, None, None)
        elif self._counts.get(id(leaf)) == 1 and len(self._leaves) < self.CACHE_SIZE:
            self._leaves[id(leaf)] = (leaf, found, template_regex(found))
        return found

    def spy_label(self, scope: Scope) -> int:
        """The route label of a request (as ``label`` sets it) on the board apiprof-spy
        reads beside each sample (src/ext/spyboard.c): its index + 1, 0 for none. The
        middleware asks only while a sampler is attached."""
        kind = scope.get("type")
        template = self.template(scope)
        if template is None or (kind != "http" and kind != "websocket"):
            return 0
        name = f"{scope.get('method', 'GET') if kind == 'http' else 'WS'} {template}"
        found = _spy_labels.get(name)
        if found is None:
            found = _spy_labels[name] = _core.spy_label(name)
        return found

    def label(self, scope: Scope) -> bool:
        """Set the route label, ``"METHOD template"`` (``"WS template"`` for a
        websocket), of an http or websocket scope; None when no route matches. True when
        a request of that route starts here (counted by the tracer: the caller times it
        with ``timed``)."""
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":
            return False
        before = ROUTE.get(None)   # labelled already by an outer RouteFinder: counted there
        _core.label_set(ROUTE, PAUSED)
        found = None
        try:
            template = self.template(scope)
            if template is not None:
                found = f"{scope.get('method', 'GET') if kind == 'http' else 'WS'} {template}"
        finally:
            if found is None or found == before:
                _core.label_set(ROUTE, found)
            else:  # a request of that route starts: the tracer counts it
                _core.label_request(ROUTE, found)
                REQUEST.set(next(_requests))
        return found is not None and found != before


async def timed(call: Awaitable[None]) -> None:
    """Await ``call``, a request's run of the app in the context its route label was set
    in, and record how long it took in the tracer's latency histogram of that route."""
    started = time.perf_counter_ns()
    try:
        await call
    finally:
        _core.route_latency(time.perf_counter_ns() - started)


def template_regex(template: str) -> re.Pattern[str]:
    """The paths a full template stands for: a parameter is one path segment, a mount's
    trailing ``/{path}`` anything below it."""
    parts = re.split(r"(\{[^}]*\})", template)
    out = []
    for i, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            out.append(".*" if part == "{path}" and i == len(parts) - 2 else "[^/]+")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def _host_type() -> type:
    try:
        from starlette.routing import Host
    except ImportError:
        return type(None)
    return Host


class RouteLabels:
    """An ASGI app that labels each request with its route while a labelling
    profiler runs, then calls ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._finder = RouteFinder(app)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if active and self._finder.label(scope):
            await timed(self.app(scope, receive, send))
            return
        await self.app(scope, receive, send)


def _wrap_config_load(config_cls: Any) -> None:
    load = config_cls.load
    if getattr(load, "_apiprof_labels", False):
        return

    def labelled_load(self: Any) -> None:
        load(self)
        if not isinstance(self.loaded_app, RouteLabels):
            self.loaded_app = RouteLabels(self.loaded_app)

    labelled_load._apiprof_labels = True  # type: ignore[attr-defined]
    config_cls.load = labelled_load


class _UvicornHook(importlib.abc.MetaPathFinder):
    """Wraps ``uvicorn.config.Config.load`` when that module is imported."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "uvicorn.config":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_wrap(module: ModuleType) -> None:
            exec_module(module)
            config = getattr(module, "Config", None)
            if config is not None and hasattr(config, "load"):
                _wrap_config_load(config)

        loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
        return spec


def install_uvicorn_hook() -> None:
    """Make every app uvicorn loads from now on (``-m uvicorn``, ``uvicorn.run``)
    labelled by route: at once if uvicorn.config is imported, else when it is."""
    loaded = sys.modules.get("uvicorn.config")
    if loaded is not None:
        config = getattr(loaded, "Config", None)
        if config is not None:
            _wrap_config_load(config)
        return
    if not any(isinstance(f, _UvicornHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _UvicornHook())
