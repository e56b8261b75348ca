"""ProfilerMiddleware: the pure ASGI middleware. It routes each request to the statistics
(always), the dashboard, an on-demand profile or a slow-request candidate; the policies,
the store, the statistics and the HTTP answers are the other modules of apiprof.asgi."""

from __future__ import annotations

import asyncio
import atexit
import gzip
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import _core, _labels
from .capture import (
    PROFILE_HEADER,
    SlowCapture,
    authorized,
    document,
    read_body,
    replay,
    wants_report,
)
from .dashboard import Dashboard, report_page
from .http import ASGIApp, Headers, Message, Receive, Scope, Send, discard, respond, respond_gzip
from .metrics import Metrics, serve_port
from .options import Options
from .pyroscope import PyroscopePusher
from .request_profile import FunctionProfile, ProfilerFactory, RequestProfiler
from .route_stats import start_request_memory, stats, table
from .stats_files import write_worker_file
from .store import ON_DEMAND_RING, ProfileStore

Keep = Callable[[dict[str, Any], bytes], None]


class _Cut:
    """Stops a slow-capture candidate's profile early (its time bound passed, or an
    on-demand request wants the tracer); the candidate is then not kept."""

    def __init__(self, release: Callable[[_Cut], None]) -> None:
        self.profile: RequestProfiler | None = None
        self.reason = ""
        self._release = release

    def __call__(self, reason: str) -> None:
        if self.reason:
            return
        self.reason = reason
        if self.profile is not None:
            self.profile.stop()
        self._release(self)


class ProfilerMiddleware:
    """Pure ASGI middleware; see docs/asgi.md (and ``Options``) for every option.

    Statistics are always on. Everything that exposes profiles over HTTP is off unless a
    ``token`` is given; a request without the right token is served as if the middleware
    were not there.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        # The route of each request, found up front by the app's own matching: the key of
        # the statistics, and the label of its work while a Profiler(labels=True) runs.
        self._routes = _labels.RouteFinder(app)
        self.options = opts = Options(**options)
        self._token = opts.token.encode() if opts.token is not None else None
        self._on_demand = self._token is not None and opts.on_demand
        self._factory: ProfilerFactory = opts.profiler or FunctionProfile
        self._server_timing = bool(opts.server_timing)
        self._slow = (None if opts.slow_ms is None else
                      SlowCapture(int(opts.slow_ms * 1e6), int(opts.slow_interval_s * 1e9),
                                  int(opts.slow_max_s * 1e9), opts.slow_body_bytes))
        # One request profile at a time (one tracer runs): on-demand requests take turns
        # on the lock; a slow-capture candidate runs only while no one holds it, and is
        # cut (``_candidate``) when an on-demand request comes.
        self._profile_lock = asyncio.Lock()
        self._candidate: _Cut | None = None
        self._max_profile_bytes = opts.max_profile_bytes
        self.profiles = ProfileStore(opts.profiles_per_route, opts.max_profiles)
        self._dashboard = Dashboard(opts.dashboard_path, self.profiles, self.dashboard_data,
                                    bool(opts.dashboard))
        self.table = table(opts.max_routes)
        try:  # routes that are mounted sub-apps get their mount prefix once
            from starlette.routing import Mount
        except ImportError:
            Mount = None  # noqa: N806
        self.table._set_mount_type(Mount)
        self.table.set_stall_threshold(0 if opts.stall_ms is None else int(opts.stall_ms * 1e6),
                                       opts.stall_stacks)
        self.stats_dir = opts.resolved_stats_dir()
        self._flush_s = opts.flush_s
        self._flush_failed = False
        self._flusher_pid = 0  # the process whose flusher thread runs (a fork needs its own)
        self._flusher_lock = threading.Lock()
        self._write_lock = threading.Lock()
        if self.stats_dir is not None:
            atexit.register(self.flush)
        # Prometheus metrics (docs/metrics.md): off unless a path or a port is given
        metrics_path, self._metrics_port, metrics_token = opts.resolved_metrics()
        self._metrics_path = metrics_path
        service = opts.resolved_service()
        self._metrics = None if metrics_path is None and self._metrics_port is None else Metrics(
            self.table, self.stats_dir, self.flush, metrics_token or "",
            (("service", service),) if service else (), opts.metrics_buckets)
        # Pyroscope (docs/metrics.md): the profiles kept here, pushed from a thread
        pyroscope_url, pyroscope_token = opts.resolved_pyroscope()
        self.pyroscope = None if pyroscope_url is None else PyroscopePusher(
            pyroscope_url, service or "asgi-app",
            opts.pyroscope_interval_s, opts.pyroscope_queue, pyroscope_token,
            opts.pyroscope_tenant, api=opts.pyroscope_api)
        # what each process starts at its first call: the statistics flusher, the port,
        # the Pyroscope pusher
        self._per_process = (self.stats_dir is not None or self._metrics_port is not None
                             or self.pyroscope is not None or opts.memory)

    @property
    def slow_candidates(self) -> int:
        """Requests profiled as slow-capture candidates."""
        return 0 if self._slow is None else self._slow.candidates

    @property
    def slow_kept(self) -> int:
        """Slow-capture candidates kept (they were slow)."""
        return 0 if self._slow is None else self._slow.kept

    # -- statistics files --

    def flush(self) -> None:
        """Writes this worker's statistics file now (when a stats directory is set). A
        failure (disk full, directory gone) is reported once on stderr, never raised into
        a request."""
        if self.stats_dir is None:
            return
        try:
            with self._write_lock:  # the flusher thread, the lifespan shutdown, atexit
                write_worker_file(self.stats_dir, self.table)
        except OSError as e:
            if not self._flush_failed:
                self._flush_failed = True
                print(f"apiprof: cannot write route statistics to {self.stats_dir}: {e}",
                      file=sys.stderr)

    def _start_process(self) -> None:
        """This process's background work, started at its first call (each forked worker
        starts its own): the request memory sampling, the statistics flusher, the metrics
        port, the Pyroscope pusher."""
        with self._flusher_lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        if self.options.memory:
            start_request_memory(self.options.memory_rate)
        if self.stats_dir is not None:
            self._start_flusher()
        if self.pyroscope is not None:
            self.pyroscope.start()
        if self._metrics is not None and self._metrics_port is not None:
            try:
                serve_port(self._metrics, self.options.metrics_host, self._metrics_port,
                           self._metrics_path or "/metrics")
            except OSError as e:
                print(f"apiprof: cannot serve metrics on {self.options.metrics_host}:"
                      f"{self._metrics_port}: {e}", file=sys.stderr)

    def _start_flusher(self) -> None:
        """Starts this process's flusher: a daemon thread that writes the statistics file
        every ``flush_s`` seconds, requests or not, so that a reader can tell a live
        worker (its file is at most ``flush_s`` old) from a dead or stuck one. Started at
        the first call in each process, not at import: a server that forks workers after
        importing the app gets one in each worker."""

        def loop() -> None:
            _core.untrace_thread()   # apiprof's own: no profiler records it
            while True:
                time.sleep(self._flush_s)
                self.flush()

        self.flush()
        threading.Thread(target=loop, name="apiprof-stats-flush", daemon=True).start()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_flush() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                self.flush()
            return message

        await self.app(scope, receive_and_flush if self.stats_dir else receive, send)

    # -- per request --

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _labels.active and self._routes.label(scope):
            await _labels.timed(self._serve(scope, receive, send))
            return
        await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._per_process and self._flusher_pid != os.getpid():
            self._start_process()
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self._metrics_path is not None and scope["path"] == self._metrics_path:
            await self._metrics.serve(scope, send)  # type: ignore[union-attr]
            return
        if self._token is not None and authorized(scope, self._token):
            if (scope["path"].startswith(self._dashboard.base)
                    and await self._dashboard.serve(scope, send)):
                return
            if self._on_demand:
                await self._on_demand_request(scope, receive, send)
                return
        slow = self._slow
        if slow is not None and slow.armed and self._tracer_free() and slow.take():
            # the body first, unprofiled: a client slow to send it holds nothing
            messages, whole = await read_body(receive, slow.body_bytes)
            receive = replay(messages, receive)
            if whole and self._tracer_free():
                await self._slow_candidate(scope, receive, send)
                return
        # The request records itself (C) when the app's coroutine ends, under the route
        # the app's router picked (RouteFinder.routed, its common case in C). What
        # _run_app does, inline: a call less per request.
        req = self.table.request(scope, send, self._server_timing, self._routes)
        try:
            await req.run(self.app(scope, receive, req))
        except BaseException:
            req.finish(True)  # the app raised before its first step: recorded here
            raise
        if slow is not None:
            slow.saw(req.wall_ns)

    def _tracer_free(self) -> bool:
        return self._candidate is None and not self._profile_lock.locked()

    def _release(self, cut: _Cut) -> None:
        if self._candidate is cut:
            self._candidate = None

    def _run_app(self, req: Any, scope: Scope, receive: Receive) -> Awaitable[None]:
        """The app's run for one HTTP request, timed by ``req`` (a RouteTable request that
        is also the app's send), to be awaited in the request's task. Every profiled
        request runs the app through here, and ``__call__`` does the same inline for the
        others (one call less per request): what must be set for the request's context
        (labels of its work) is set in both. A plain call, not a coroutine: no extra frame
        per request."""
        return req.run(self.app(scope, receive, req))  # type: ignore[no-any-return]

    async def _on_demand_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Profiles an authorized request. Its response gets ``X-Apiprof-Profile: <id>``
        and the profile is kept; with ``X-Apiprof-Report: json`` (or
        ``?apiprof_report=json``) the profile replaces the app's response instead, and with
        ``html`` its HTML report does."""
        report = wants_report(scope)
        profile_id = self.profiles.new_id()
        header = [(PROFILE_HEADER, profile_id.encode())]
        kept: list[tuple[dict[str, Any], bytes]] = []

        def keep(record: dict[str, Any], document: bytes) -> None:
            self.profiles.add(ON_DEMAND_RING, record, document)
            kept.append((record, document))
            self._kept(record, document)

        async with self._profile_lock:  # profiled requests take turns
            if self._candidate is not None:
                self._candidate("cut: an on-demand request needed the profiler")
            await self._run_profiled(scope, receive, discard if report else send, "request",
                                     header, profile_id, keep)
        page = report_page(*kept[0]) if report == "html" else None
        if page is not None:
            await respond(send, 200, page, "text/html; charset=utf-8", header)
        elif report:  # JSON, or the error note when there is no profile to show
            await respond_gzip(send, scope, kept[0][1], header)

    async def _slow_candidate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Profiles a request after a slow one was seen; keeps it only if it is slow too."""
        slow = self._slow
        assert slow is not None

        def keep(record: dict[str, Any], document: bytes) -> None:
            if slow.keep(record):
                self.profiles.add(record["route"], record, document)
                self._kept(record, document)

        cut = self._candidate = _Cut(self._release)
        timer = asyncio.get_running_loop().call_later(
            slow.max_ns / 1e9, cut,
            f"cut: still running after slow_max_s ({slow.max_ns / 1e9:g} s)")
        try:
            await self._run_profiled(scope, receive, send, "slow", None,
                                     self.profiles.new_id(), keep, cut)
        finally:
            timer.cancel()
            self._release(cut)

    def _add_waits(self, profile: Any, label: str, record: dict[str, Any]) -> None:
        """A profiled request's waits by kind go to its route statistics (never raises:
        a profiler without ``waits()``, or whose ``waits()`` fails, adds nothing; one whose
        document could not be kept, too large or failed, adds the waits it measured)."""
        waits = getattr(profile, "waits", None)
        if waits is None:
            return
        try:
            self.table.add_waits(label, record["method"], record["status"] // 100, waits())
        except Exception:  # statistics never break a request
            return

    @staticmethod
    def _add_stalls(profile: Any, route: str, req: Any) -> None:
        """The stalls of a profiled request that the watchdog caught go into its profile
        (never raises: a profiler without ``add_stalls()`` gets none)."""
        add = getattr(profile, "add_stalls", None)
        if add is None:
            return
        try:
            stalls = req.stalls()
            if stalls:
                add(route, stalls)
        except Exception:  # a profile never breaks a request
            return

    def _kept(self, record: dict[str, Any], document: bytes) -> None:
        """A profile was kept: queued for Pyroscope (an append; the push is a thread's)."""
        if self.pyroscope is not None:
            self.pyroscope.offer(record, document)

    async def _run_profiled(
        self, scope: Scope, receive: Receive, send: Send, kind: str,
        extra_headers: Headers | None, profile_id: str, keep: Keep, cut: _Cut | None = None,
    ) -> None:
        """Runs one request under a new request profile and hands its record and JSON
        document to ``keep``, also when the app raises (the exception then propagates).
        With ``cut``, the profile can be stopped early: the record then says why."""
        profile: RequestProfiler | None = None
        error = ""
        try:
            candidate = self._factory()
            candidate.start()
            profile = candidate
            if cut is not None:
                cut.profile = candidate
        except RuntimeError as e:  # another profiler runs (apiprof run, a user's Profiler)
            error = f"cannot profile this request: {e}"
        before = dict(scope)
        req = self.table.request(scope, send, self._server_timing)  # after start: not timed
        if extra_headers:
            req.extra_headers = extra_headers
        failed = True
        try:
            await self._run_app(req, scope, receive)
            failed = False
        finally:
            if profile is not None:
                profile.stop()
                if cut is not None and cut.reason:
                    profile, error = None, cut.reason
            label = req.finish(failed, self._routes.routed(before, scope.get("route")))
            record = {
                "id": profile_id, "kind": kind, "route": label,
                "method": scope.get("method", ""), "path": scope.get("path", ""),
                "status": req.status, "wall_ns": req.wall_ns, "cpu_ns": req.cpu_ns,
                "time": time.time(), "bytes": 0,
            }
            if profile is not None:
                self._add_stalls(profile, f"{record['method']} {label}", req)
            doc = b"" if profile is None else document(profile, record, self._max_profile_bytes)
            if profile is not None:   # measured, also when too large to keep
                self._add_waits(profile, label, record)
            if not doc:
                record.setdefault("error", error or "the profiler returned nothing")
                doc = gzip.compress(json.dumps({"error": record["error"]}).encode())
            record["bytes"] = len(doc)
            keep(record, doc)

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


def _init_signature() -> inspect.Signature:
    """``ProfilerMiddleware(app, *, <every Options field>)``, for help() and editors: the
    options are declared once, in Options."""
    plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
    options = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(Options).parameters.values()]
    return inspect.Signature([inspect.Parameter("self", plain),
                              inspect.Parameter("app", plain, annotation="ASGIApp"), *options],
                             return_annotation="None")


ProfilerMiddleware.__init__.__signature__ = _init_signature()  # type: ignore[attr-defined]
