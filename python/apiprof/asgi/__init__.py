"""apiprof.asgi: a pure ASGI middleware with always-on route statistics aggregated in C,
token-guarded per-request profiles, slow-request capture, Server-Timing and a dashboard.

    from apiprof.asgi import ProfilerMiddleware
    app = ProfilerMiddleware(app)                  # statistics only
    apiprof.asgi.stats()                           # JSON-able dict of this process

Per request, the Python here does a handful of attribute reads; the timing, the byte
counting, the CPU time of the app's steps and the aggregation are C
(``apiprof._core.RouteTable``). See docs/asgi.md. The modules: ``middleware`` (the
request routing), ``options``, ``capture`` (token and capture policy), ``request_profile``
(the RequestProfiler seam), ``store`` (kept profiles), ``route_stats`` and ``stats_files``
(route statistics), ``dashboard``, ``http`` (raw ASGI helpers).
"""

from .capture import (
    MIN_TOKEN_CHARS,
    PROFILE_HEADER,
    REPORT_HEADER,
    REPORT_QUERY,
    TOKEN_HEADER,
    TOKEN_QUERY,
)
from .middleware import ProfilerMiddleware
from .options import Options
from .request_profile import FunctionProfile, ProfilerFactory, RequestProfiler
from .route_stats import format_table, reset, stats
from .store import ProfileStore

__all__ = [
    "ProfilerMiddleware", "RequestProfiler", "ProfilerFactory", "FunctionProfile",
    "stats", "reset", "format_table", "Options", "ProfileStore",
    "TOKEN_HEADER", "TOKEN_QUERY", "PROFILE_HEADER", "REPORT_HEADER", "REPORT_QUERY",
    "MIN_TOKEN_CHARS",
]
