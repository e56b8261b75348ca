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

import asyncio
import atexit
import gzip
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

from . import _labels, _routestats
from .errors import ConfigurationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_HEADER = b"x-apiprof-token"
TOKEN_QUERY = "apiprof"
PROFILE_HEADER = b"x-apiprof-profile"
REPORT_HEADER = b"x-apiprof-report"
REPORT_QUERY = "apiprof_report"
MIN_TOKEN_CHARS = 16

__all__ = [
    "ProfilerMiddleware", "RequestProfiler", "ProfilerFactory", "FunctionProfile",
    "stats", "reset", "format_table",
]


# ---- the seam for per-request profiles ---------------------------------------------------


class RequestProfiler(Protocol):
    """Profiles one request. ``start()`` is called in the request's task just before the
    app runs, ``stop()`` in the same task after its last byte is sent, then ``result()``
    once. Each request gets a new instance from a ``ProfilerFactory``. ``start()`` may
    raise RuntimeError when it cannot profile now (another profiler runs): the request is
    then served without a profile."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def result(self, info: dict[str, str]) -> bytes:
        """The profile as one UTF-8 JSON document; ``info`` describes the request (id,
        kind, route, method, path, status, wall_ns, cpu_ns) for the profile to carry."""
        ...


ProfilerFactory = Callable[[], RequestProfiler]


class FunctionProfile:
    """The default RequestProfiler: apiprof.Profiler with scope="context", so that the
    profile holds this request's work only (its task, the tasks it starts and its
    thread-pool calls), not that of requests running beside it. The result is the JSON
    export of ``apiprof report --format json`` with ``request.*`` metadata."""

    def __init__(self) -> None:
        from ._profiler import Profiler

        self._profiler = Profiler(clock="wall", builtins=True, scope="context")

    def start(self) -> None:
        self._profiler.start()

    def stop(self) -> None:
        self._profiler.stop()

    def result(self, info: dict[str, str]) -> bytes:
        profile = self._profiler.profile
        for key, value in info.items():
            profile.set_meta(f"request.{key}", value)
        return bytes(profile.json())


# ---- captured profiles --------------------------------------------------------------------


class ProfileStore:
    """Captured profiles: a ring of ``keep`` per route for slow requests, one ring of
    ``keep`` for on-demand ones, at most ``max_total`` in all (the oldest goes first).
    Each is a metadata record and the profile's JSON document, gzip-compressed."""

    def __init__(self, keep: int, max_total: int) -> None:
        self.keep = keep
        self.max_total = max_total
        self._rings: dict[str, deque[str]] = {}
        self._by_id: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{os.getpid()}-{next(self._ids)}"

    def add(self, ring: str, record: dict[str, Any], document: bytes) -> None:
        q = self._rings.setdefault(ring, deque())
        q.append(record["id"])
        self._by_id[record["id"]] = (record, document)
        if len(q) > self.keep:
            self._by_id.pop(q.popleft(), None)
        while len(self._by_id) > self.max_total:
            oldest = next(iter(self._by_id))
            del self._by_id[oldest]
            for ring_ids in self._rings.values():
                if oldest in ring_ids:
                    ring_ids.remove(oldest)

    def get(self, profile_id: str) -> tuple[dict[str, Any], bytes] | None:
        """The record and gzipped JSON document of a kept profile, or None."""
        return self._by_id.get(profile_id)

    def index(self) -> list[dict[str, Any]]:
        """Metadata of every kept profile, newest first."""
        return [rec for rec, _ in reversed(self._by_id.values())]


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
        self._route_labels = _labels.RouteFinder(app)  # for a Profiler(labels=True) running
        self._token = _valid_token(token)
        if dashboard and self._token is None:
            raise ConfigurationError("dashboard=True needs a token (the dashboard is never open)")
        if slow_ms is not None and self._token is None:
            raise ConfigurationError("slow_ms needs a token (captured profiles are read through "
                                     "the token-guarded profile API)")
        if not dashboard_path.startswith("/") or dashboard_path.endswith("/"):
            raise ConfigurationError("dashboard_path must start with '/' and not end with '/'")
        if slow_ms is not None and not slow_ms > 0:
            raise ConfigurationError("slow_ms must be a positive number of milliseconds")
        if not flush_s > 0 or not slow_interval_s >= 0:
            raise ConfigurationError("flush_s must be positive and slow_interval_s not negative")
        if min(profiles_per_route, max_profiles, max_profile_bytes, max_routes) < 1:
            raise ConfigurationError("max_routes and the profile limits must be at least 1")
        self._on_demand = self._token is not None and on_demand
        self._factory: ProfilerFactory = profiler if profiler is not None else FunctionProfile
        self._server_timing = bool(server_timing)
        self._dashboard = bool(dashboard)
        self._dash = dashboard_path
        self._guarded = self._token is not None
        self._slow_ns = None if slow_ms is None else int(slow_ms * 1e6)
        self._slow_interval_ns = int(slow_interval_s * 1e9)
        self._slow_armed = False
        self._slow_next = 0
        self.slow_candidates = 0  # requests profiled as slow-capture candidates
        self.slow_kept = 0  # of which kept (they were slow)
        self._profile_lock = asyncio.Lock()  # one request profile at a time (one tracer runs)
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
        if _labels.active:
            self._route_labels.label(scope)
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self._guarded and self._authorized(scope):
            if scope["path"].startswith(self._dash) and await self._serve_dashboard(scope, send):
                return
            if self._on_demand:
                await self._on_demand_request(scope, receive, send)
                return
        if self._slow_armed and not self._profile_lock.locked():
            now = time.monotonic_ns()
            if now >= self._slow_next:
                self._slow_armed = False
                self._slow_next = now + self._slow_interval_ns
                await self._slow_candidate(scope, receive, send)
                return
        req = self.table.request(scope, send, self._server_timing)
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

    async def _on_demand_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Profiles an authorized request. Its response gets ``X-Apiprof-Profile: <id>``
        and the profile is kept; with ``X-Apiprof-Report: json`` (or
        ``?apiprof_report=json``) the profile replaces the app's response instead."""
        report = _wants_report(scope)
        profile_id = self.profiles.new_id()
        header = [(PROFILE_HEADER, profile_id.encode())]
        kept: list[bytes] = []

        def keep(record: dict[str, Any], document: bytes) -> None:
            self.profiles.add("<on-demand>", record, document)
            kept.append(document)

        async with self._profile_lock:  # profiled requests take turns
            await self._run_profiled(scope, receive, _discard if report else send, "request",
                                     header, profile_id, keep)
        if report:
            await _respond_gzip(send, scope, kept[0], header)

    async def _slow_candidate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Profiles a request after a slow one was seen; keeps it only if it is slow too."""
        self.slow_candidates += 1

        def keep(record: dict[str, Any], document: bytes) -> None:
            assert self._slow_ns is not None
            if record["wall_ns"] > self._slow_ns:
                self._slow_armed = True  # a slow request was seen: the next may be captured
                if "error" not in record:
                    self.slow_kept += 1
                    self.profiles.add(record["route"], record, document)

        async with self._profile_lock:
            await self._run_profiled(scope, receive, send, "slow", None,
                                     self.profiles.new_id(), keep)

    async def _run_profiled(
        self, scope: Scope, receive: Receive, send: Send, kind: str,
        extra_headers: list[tuple[bytes, bytes]] | None, profile_id: str,
        keep: Callable[[dict[str, Any], bytes], None],
    ) -> None:
        """Runs one request under a new request profile and hands its record and JSON
        document to ``keep``, also when the app raises (the exception then propagates)."""
        profile: RequestProfiler | None = None
        error = ""
        try:
            candidate = self._factory()
            candidate.start()
            profile = candidate
        except RuntimeError as e:  # another profiler runs (apiprof run, a user's Profiler)
            error = f"cannot profile this request: {e}"
        req = self.table.request(scope, send, self._server_timing)  # after start: not timed
        if extra_headers:
            req.extra_headers = extra_headers
        failed = True
        try:
            await req.run(self.app(scope, receive, req))
            failed = False
        finally:
            if profile is not None:
                profile.stop()
            label = req.finish(failed)
            record = {
                "id": profile_id, "kind": kind, "route": label,
                "method": scope.get("method", ""), "path": scope.get("path", ""),
                "status": req.status, "wall_ns": req.wall_ns, "cpu_ns": req.cpu_ns,
                "time": time.time(), "bytes": 0,
            }
            document = self._document(profile, record) if profile is not None else b""
            if not document:
                record.setdefault("error", error or "the profiler returned nothing")
                document = gzip.compress(json.dumps({"error": record["error"]}).encode())
            record["bytes"] = len(document)
            keep(record, document)

    def _document(self, profile: RequestProfiler, record: dict[str, Any]) -> bytes:
        """The profile's JSON document gzipped, or b"" with record["error"] set."""
        info = {k: str(record[k]) for k in
                ("id", "kind", "route", "method", "path", "status", "wall_ns", "cpu_ns")}
        try:
            document = gzip.compress(profile.result(info), compresslevel=1)
        except Exception as e:  # a broken profiler must not break the response
            record["error"] = f"{type(e).__name__}: {e}"
            return b""
        if len(document) > self._max_profile_bytes:
            record["error"] = (f"profile of {len(document)} bytes (gzipped) exceeds "
                               f"max_profile_bytes ({self._max_profile_bytes})")
            return b""
        return document

    # -- dashboard --

    async def _serve_dashboard(self, scope: Scope, send: Send) -> bool:
        """Answers an authorized request under the dashboard path; False if the path is
        not one of the dashboard's (the app then serves it)."""
        from . import _dashboard

        sub = scope["path"][len(self._dash):]
        if sub.startswith("/api/profiles/"):
            kept = self.profiles.get(sub[len("/api/profiles/"):])
            if kept is None:
                await _respond(send, 404, b'{"error": "no such profile"}', "application/json")
            else:
                await _respond_gzip(send, scope, kept[1])
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
        data["slow_capture"] = {"candidates": self.slow_candidates, "kept": self.slow_kept}
        return data


def _wants_report(scope: Scope) -> bool:
    """Whether an authorized request asks for its profile as the response."""
    for name, value in scope.get("headers", ()):
        if name == REPORT_HEADER:
            return bytes(value).lower() == b"json"
    qs = scope.get("query_string", b"")
    if b"apiprof_report=" not in qs:
        return False
    return parse_qs(qs.decode("latin-1")).get(REPORT_QUERY, [""])[0].lower() == "json"


async def _respond_gzip(send: Send, scope: Scope, document: bytes,
                        extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Sends a gzipped JSON document: as it is to clients that accept gzip, else inflated."""
    accepts = b""
    for name, value in scope.get("headers", ()):
        if name == b"accept-encoding":
            accepts = bytes(value).lower()
            break
    headers = list(extra or ())
    if b"gzip" in accepts:
        headers.append((b"content-encoding", b"gzip"))
    else:
        document = gzip.decompress(document)
    await _respond(send, 200, document, "application/json", headers)


async def _discard(message: Message) -> None:
    """The app's send when its response is replaced by the profile."""


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"), *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
