"""The seam for per-request profiles: the RequestProfiler protocol and its default,
FunctionProfile (apiprof's function tracer limited to the request's context)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class RequestProfiler(Protocol):
    """Profiles one request. ``start()`` is called in the request's task just before the
    app runs, ``stop()`` in the same task after its last byte is sent, then ``result()``
    once. ``stop()`` may also come earlier, from another task, when a slow-capture
    candidate is cut (docs/asgi.md): it must be idempotent and stop the recording at once.
    Each request gets a new instance from a ``ProfilerFactory``. ``start()`` may
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
    thread-pool calls), not that of requests running beside it, and its database
    statements and outgoing HTTP calls (``queries=True``: the drivers' and clients'
    methods are timed while the profile runs, docs/waits.md). The result is the JSON
    export of ``apiprof report --format json`` with ``request.*`` metadata."""

    def __init__(self) -> None:
        from .._profiler import Profiler

        self._profiler = Profiler(clock="wall", builtins=True, scope="context", queries=True)

    def start(self) -> None:
        self._profiler.start()

    def stop(self) -> None:
        self._profiler.stop()

    def waits(self) -> dict[str, int]:
        """The request's wait time by kind (ns), for the route statistics; optional in
        the RequestProfiler protocol."""
        return dict(self._profiler.profile.wait_totals())

    def add_stalls(self, route: str, stalls: list[tuple[int, int, list[tuple]]]) -> None:
        """The request's event-loop stalls that the middleware's watchdog caught (start,
        duration, call path outermost first), into the profile (its ``"stalls"``, the
        ``loop_stall`` finding); optional in the RequestProfiler protocol. The tracer of a
        request profile does not see the loop's own frames, so it finds none itself."""
        for start, duration, frames in stalls:
            self._profiler.profile.add_stall(start, duration, frames, route=route)

    def result(self, info: dict[str, str]) -> bytes:
        profile = self._profiler.profile
        for key, value in info.items():
            profile.set_meta(f"request.{key}", value)
        return bytes(profile.json())
