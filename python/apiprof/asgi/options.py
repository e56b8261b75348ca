"""The middleware's options, checked together when it is set up (docs/asgi.md lists them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigurationError
from .capture import MIN_TOKEN_CHARS
from .request_profile import ProfilerFactory


@dataclass(frozen=True)
class Options:
    """Every option of ProfilerMiddleware with its default. Making one checks it:
    ConfigurationError for options that cannot work together, TypeError for an unknown
    one, so a bad setup fails when the app is built, not at its first request."""

    token: str | None = None
    on_demand: bool = True
    slow_ms: float | None = None
    server_timing: bool = False
    dashboard: bool = False
    dashboard_path: str = "/_apiprof"
    stats_dir: str | os.PathLike[str] | None = None
    flush_s: float = 5.0
    max_routes: int = 256
    profiles_per_route: int = 4
    max_profiles: int = 64
    max_profile_bytes: int = 256 * 1024
    slow_interval_s: float = 1.0
    slow_max_s: float = 5.0
    slow_body_bytes: int = 1024 * 1024
    profiler: ProfilerFactory | None = None

    def __post_init__(self) -> None:
        token = self.token
        if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS
                                  or not token.isprintable()):
            raise ConfigurationError(
                f"token must be a printable string of at least {MIN_TOKEN_CHARS} characters"
            )
        if self.dashboard and token is None:
            raise ConfigurationError("dashboard=True needs a token (the dashboard is never open)")
        if self.slow_ms is not None and token is None:
            raise ConfigurationError("slow_ms needs a token (captured profiles are read through "
                                     "the token-guarded profile API)")
        path = self.dashboard_path
        if not path.startswith("/") or path.endswith("/"):
            raise ConfigurationError("dashboard_path must start with '/' and not end with '/'")
        if self.slow_ms is not None and not self.slow_ms > 0:
            raise ConfigurationError("slow_ms must be a positive number of milliseconds")
        if not self.flush_s > 0 or not self.slow_interval_s >= 0:
            raise ConfigurationError("flush_s must be positive and slow_interval_s not negative")
        if not self.slow_max_s > 0 or not self.slow_body_bytes >= 0:
            raise ConfigurationError("slow_max_s must be positive and slow_body_bytes not "
                                     "negative")
        if min(self.profiles_per_route, self.max_profiles, self.max_profile_bytes,
               self.max_routes) < 1:
            raise ConfigurationError("max_routes and the profile limits must be at least 1")

    def resolved_stats_dir(self) -> str | None:
        """``stats_dir``, else $APIPROF_STATS_DIR, else None (no statistics files)."""
        directory = self.stats_dir if self.stats_dir is not None else os.environ.get(
            "APIPROF_STATS_DIR")
        return os.fspath(directory) if directory else None
