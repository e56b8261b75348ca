"""apiprof.asgi: a pure ASGI middleware with always-on route statistics aggregated in C,
token-guarded per-request profiles, slow-request capture, Server-Timing and a dashboard.

    from apiprof.asgi import ProfilerMiddleware
    app = ProfilerMiddleware(app)                  # statistics only
    apiprof.asgi.stats()                           # JSON-able dict of this process

Per request, the Python here does a handful of attribute reads; the timing, the byte
counting, the CPU time of the app's steps and the aggregation are C
(``apiprof._core.RouteTable``). See docs/asgi.md.
"""

from __future__ import annotations

import atexit
import hmac
import itertools
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol
from urllib.parse import parse_qs

from . import _routestats
from .errors import ConfigurationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_HEADER = b"x-apiprof-token"
TOKEN_QUERY = "apiprof"
PROFILE_HEADER = b"x-apiprof-profile"
MIN_TOKEN_CHARS = 16

__all__ = [
    "ProfilerMiddleware", "RequestProfiler", "ProfilerFactory", "function_profiler_factory",
    "stats", "reset", "format_table",
]


# ---- the seam for per-request profiles ---------------------------------------------------


class RequestProfiler(Protocol):
    """Profiles one request. ``start()`` is called in the request's task just before the
    app runs, ``stop()`` in the same task after its last byte is sent, then ``result()``
    once. Each request gets a new instance from a ``ProfilerFactory``."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def result(self) -> dict[str, Any]:
        """The profile as a JSON-able dict."""
        ...


ProfilerFactory = Callable[[], RequestProfiler]


class _FunctionProfile:
    """A RequestProfiler on apiprof.Profiler (the function profiler)."""

    def __init__(self, profiler_type: Any) -> None:
        self._profiler = profiler_type(clock="wall", builtins=True)

    def start(self) -> None:
        self._profiler.start()

    def stop(self) -> None:
        self._profiler.stop()

    def result(self) -> dict[str, Any]:
        functions = sorted(self._profiler.functions(), key=lambda f: -f["total_ns"])
        return {"kind": "functions", "functions": functions}


def function_profiler_factory() -> ProfilerFactory | None:
    """The factory of apiprof.Profiler-based request profiles, or None when this
    installation of apiprof has no function profiler."""
    import apiprof

    profiler_type = getattr(apiprof, "Profiler", None)
    if profiler_type is None:
        return None
    return lambda: _FunctionProfile(profiler_type)


# ---- captured profiles --------------------------------------------------------------------


class ProfileStore:
    """Captured profiles: a ring of ``keep`` per route for slow requests, one ring of
    ``keep`` for on-demand ones, at most ``max_total`` in all (the oldest goes first)."""

    def __init__(self, keep: int, max_total: int) -> None:
        self.keep = keep
        self.max_total = max_total
        self._rings: dict[str, deque[str]] = {}
        self._by_id: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{os.getpid()}-{next(self._ids)}"

    def add(self, ring: str, record: dict[str, Any]) -> None:
        q = self._rings.setdefault(ring, deque())
        q.append(record["id"])
        self._by_id[record["id"]] = record
        if len(q) > self.keep:
            self._by_id.pop(q.popleft(), None)
        while len(self._by_id) > self.max_total:
            oldest = next(iter(self._by_id))
            del self._by_id[oldest]
            for ring_ids in self._rings.values():
                if oldest in ring_ids:
                    ring_ids.remove(oldest)

    def get(self, profile_id: str) -> dict[str, Any] | None:
        return self._by_id.get(profile_id)

    def index(self) -> list[dict[str, Any]]:
        """Metadata of every kept profile, newest first."""
        records = reversed(self._by_id.values())
        return [{k: v for k, v in rec.items() if k != "profile"} for rec in records]


# ---- module-level statistics -----------------------------------------------------------


def stats(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Route statistics as a JSON-able dict: this process's, or, with ``directory``, the
    exact merge of every worker's file in it."""
    if directory is None:
        rows = _routestats.table().snapshot()
        files = 0
    else:
        merged, paths = _routestats.read_dir(directory)
        rows, files = merged.snapshot(), len(paths)
    return {"version": 1, "workers": files, "routes": _routestats.summary(rows)}


def reset() -> None:
    """Forgets this process's route statistics (other workers' files are not touched)."""
    _routestats.table().reset()


format_table = _routestats.format_table


# ---- the middleware ------------------------------------------------------------------------


def _valid_token(token: str | None) -> bytes | None:
    if token is None:
        return None
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isprintable():
        raise ConfigurationError(
            f"token must be a printable string of at least {MIN_TOKEN_CHARS} characters"
        )
    return token.encode()


class ProfilerMiddleware:
    """Pure ASGI middleware; see docs/asgi.md for every option.

    Statistics are always on. Everything that exposes profiles over HTTP is off unless a
    ``token`` is given; a request without the right token is served as if the middleware
    were not there.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None = None,
        on_demand: bool = True,
        slow_ms: float | None = None,
        server_timing: bool = False,
        dashboard: bool = False,
        dashboard_path: str = "/_apiprof",
        stats_dir: str | os.PathLike[str] | None = None,
        flush_s: float = 5.0,
        max_routes: int = 256,
        profiles_per_route: int = 4,
        max_profiles: int = 64,
        max_profile_bytes: int = 256 * 1024,
        slow_interval_s: float = 1.0,
        profiler: ProfilerFactory | None = None,
    ) -> None:
        self.app = app
        self._token = _valid_token(token)
        if dashboard and self._token is None:
            raise ConfigurationError("dashboard=True needs a token (the dashboard is never open)")
        if not dashboard_path.startswith("/") or dashboard_path.endswith("/"):
            raise ConfigurationError("dashboard_path must start with '/' and not end with '/'")
        if slow_ms is not None and not slow_ms > 0:
            raise ConfigurationError("slow_ms must be a positive number of milliseconds")
        if not flush_s > 0 or not slow_interval_s >= 0:
            raise ConfigurationError("flush_s must be positive and slow_interval_s not negative")
        if min(profiles_per_route, max_profiles, max_profile_bytes, max_routes) < 1:
            raise ConfigurationError("max_routes and the profile limits must be at least 1")
        self._on_demand = self._token is not None and on_demand
        self._factory = profiler if profiler is not None else function_profiler_factory()
        if self._factory is None and (self._on_demand or slow_ms is not None):
            what = "slow_ms" if slow_ms is not None else "a token (on-demand profiles)"
            raise ConfigurationError(
                f"{what} needs apiprof.Profiler, which this installation of apiprof does not "
                "have; pass on_demand=False to use the token for the dashboard only"
            )
        self._server_timing = bool(server_timing)
        self._dashboard = bool(dashboard)
        self._dash = dashboard_path
        self._guarded = self._token is not None
        self._slow_ns = None if slow_ms is None else int(slow_ms * 1e6)
        self._slow_interval_ns = int(slow_interval_s * 1e9)
        self._slow_armed = False
        self._slow_busy = False
        self._slow_next = 0
        self._max_profile_bytes = max_profile_bytes
        self.profiles = ProfileStore(profiles_per_route, max_profiles)
        self.table = _routestats.table(max_routes)
        try:  # routes that are mounted sub-apps get their mount prefix once
            from starlette.routing import Mount
        except ImportError:
            Mount = None  # noqa: N806
        self.table._set_mount_type(Mount)
        directory = stats_dir if stats_dir is not None else os.environ.get("APIPROF_STATS_DIR")
        self.stats_dir = os.fspath(directory) if directory else None
        self._flush_ns = int(flush_s * 1e9)
        self._next_flush = 0
        self._flush_failed = False
        if self.stats_dir is not None:
            atexit.register(self.flush)

    # -- statistics files --

    def flush(self) -> None:
        """Writes this worker's statistics file now (when a stats directory is set). A
        failure (disk full, directory gone) is reported once on stderr, never raised into
        a request."""
        if self.stats_dir is None:
            return
        self._next_flush = time.monotonic_ns() + self._flush_ns
        try:
            _routestats.write_worker_file(self.stats_dir)
        except OSError as e:
            if not self._flush_failed:
                self._flush_failed = True
                print(f"apiprof: cannot write route statistics to {self.stats_dir}: {e}",
                      file=sys.stderr)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_flush() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                self.flush()
            return message

        await self.app(scope, receive_and_flush if self.stats_dir else receive, send)

    # -- per request --

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        profile: RequestProfiler | None = None
        on_demand = False
        if self._guarded and self._authorized(scope):
            if scope["path"].startswith(self._dash) and await self._serve_dashboard(scope, send):
                return
            if self._on_demand:
                profile = self._factory()  # type: ignore[misc]
                on_demand = True
        if profile is None and self._slow_armed and not self._slow_busy:
            profile = self._slow_candidate()
        req = self.table.request(scope, send, self._server_timing)
        if profile is not None:
            await self._run_profiled(req, profile, on_demand, scope, receive)
            return
        try:
            await req.run(self.app(scope, receive, req))
        except BaseException:
            req.finish(True)
            raise
        req.finish()
        if self._slow_ns is not None and req.wall_ns > self._slow_ns:
            self._slow_armed = True
        if self.stats_dir is not None and time.monotonic_ns() >= self._next_flush:
            self.flush()

    def _authorized(self, scope: Scope) -> bool:
        """Whether the request carries the token (header, else query). Constant time in
        the token's content; a request without one costs a header scan."""
        token = self._token
        assert token is not None
        given = b""
        for name, value in scope.get("headers", ()):
            if name == TOKEN_HEADER:
                given = value
                break
        if not given:
            qs = scope.get("query_string", b"")
            if b"apiprof=" in qs:
                values = parse_qs(qs.decode("latin-1")).get(TOKEN_QUERY)
                given = values[0].encode("latin-1") if values else b""
        return hmac.compare_digest(given, token)

    def _slow_candidate(self) -> RequestProfiler | None:
        now = time.monotonic_ns()
        if now < self._slow_next or self._factory is None:
            return None
        self._slow_next = now + self._slow_interval_ns
        return self._factory()

    async def _run_profiled(
        self, req: Any, profile: RequestProfiler, on_demand: bool, scope: Scope,
        receive: Receive,
    ) -> None:
        """Runs a request under a profile: on demand (kept, its id in a response header)
        or as a slow-capture candidate (kept only if it turns out slow)."""
        profile_id = self.profiles.new_id()
        if on_demand:
            req.extra_headers = [(PROFILE_HEADER, profile_id.encode())]
        else:
            self._slow_busy = True
        error = True
        profile.start()
        try:
            await req.run(self.app(scope, receive, req))
            error = False
        finally:
            profile.stop()
            if not on_demand:
                self._slow_busy = False
            label = req.finish(error)
            slow = self._slow_ns is not None and req.wall_ns > self._slow_ns
            if on_demand or slow:
                if not on_demand:
                    self._slow_armed = False
                self._keep(profile, profile_id, label, scope, req,
                           "request" if on_demand else "slow")

    def _keep(
        self, profile: RequestProfiler, profile_id: str, label: str, scope: Scope, req: Any,
        kind: str,
    ) -> None:
        try:
            result = profile.result()
        except Exception as e:  # a broken profiler must not break the response
            result = {"error": f"{type(e).__name__}: {e}"}
        text = json.dumps(result)
        truncated = len(text) > self._max_profile_bytes
        if truncated:
            result = {"kind": result.get("kind"), "truncated": True,
                      "error": f"profile of {len(text)} bytes exceeds max_profile_bytes"}
        record = {
            "id": profile_id, "kind": kind, "route": label, "method": scope.get("method", ""),
            "path": scope.get("path", ""), "status": req.status, "wall_ns": req.wall_ns,
            "cpu_ns": req.cpu_ns, "time": time.time(), "truncated": truncated, "profile": result,
        }
        self.profiles.add("<on-demand>" if kind == "request" else label, record)

    # -- dashboard --

    async def _serve_dashboard(self, scope: Scope, send: Send) -> bool:
        """Answers an authorized request under the dashboard path; False if the path is
        not one of the dashboard's (the app then serves it)."""
        from . import _dashboard

        sub = scope["path"][len(self._dash):]
        if sub.startswith("/api/profiles/"):
            record = self.profiles.get(sub[len("/api/profiles/"):])
            if record is None:
                await _respond(send, 404, b'{"error": "no such profile"}', "application/json")
            else:
                await _respond(send, 200, json.dumps(record).encode(), "application/json")
            return True
        if not self._dashboard:
            return False
        if sub == "/api/profiles":
            await _respond(send, 200, json.dumps(self.profiles.index()).encode(),
                           "application/json")
        elif sub == "/api/stats":
            await _respond(send, 200, json.dumps(self.dashboard_data()).encode(),
                           "application/json")
        elif sub in ("", "/"):
            page = _dashboard.render(self.dashboard_data(), self._dash)
            await _respond(send, 200, page.encode(), "text/html; charset=utf-8")
        else:
            return False
        return True

    def dashboard_data(self) -> dict[str, Any]:
        """What the dashboard shows: statistics of every worker when a stats directory is
        set (this worker's file written first), else of this process; kept profiles."""
        if self.stats_dir is not None:
            self.flush()
            try:
                data = stats(self.stats_dir)
            except (OSError, ValueError) as e:
                data = stats()
                data["warning"] = f"cannot merge the stats directory: {e}"
        else:
            data = stats()
            data["workers"] = 1
        data["profiles"] = self.profiles.index()
        return data


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
