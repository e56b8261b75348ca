"""The middleware's options, checked together when it is set up (docs/asgi.md lists them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigurationError
from .capture import MIN_TOKEN_CHARS
from .metrics import DEFAULT_BUCKETS_S
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
    metrics_path: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = None
    metrics_buckets: tuple[float, ...] = DEFAULT_BUCKETS_S
    service: str | None = None
    pyroscope_url: str | None = None
    pyroscope_interval_s: float = 10.0
    pyroscope_queue: int = 32
    pyroscope_token: str | None = None
    pyroscope_tenant: str | None = None
    pyroscope_api: str = "auto"
    memory: bool = False
    memory_rate: int = 512 * 1024
    stall_ms: float | None = 50.0
    stall_stacks: bool = True

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

        _check_metrics(self.metrics_path, self.metrics_port, self.metrics_token or token,
                       self.metrics_buckets)
        _check_pyroscope(self.pyroscope_url)
        if self.pyroscope_api not in ("auto", "push", "ingest"):
            raise ConfigurationError("pyroscope_api must be auto, push or ingest")
        if self.stall_ms is not None and not self.stall_ms > 0:
            raise ConfigurationError("stall_ms must be a positive number of milliseconds, "
                                     "or None")
        if not isinstance(self.memory, bool):
            raise ConfigurationError("memory must be True or False")
        if not isinstance(self.stall_stacks, bool):
            raise ConfigurationError("stall_stacks must be True or False")
        if not isinstance(self.memory_rate, int) or not 1 <= self.memory_rate <= 1 << 40:
            raise ConfigurationError("memory_rate must be 1 to 2**40 bytes")
        if not self.pyroscope_interval_s > 0 or self.pyroscope_queue < 1:
            raise ConfigurationError("pyroscope_interval_s must be positive and "
                                     "pyroscope_queue at least 1")

    def resolved_metrics(self) -> tuple[str | None, int | None, str | None]:
        """(path, port, token) of the Prometheus metrics: the options, else
        $APIPROF_METRICS_PATH, $APIPROF_METRICS_PORT, $APIPROF_METRICS_TOKEN; the token
        falls back to ``token``. ConfigurationError for unusable environment values."""
        env = os.environ
        path = self.metrics_path if self.metrics_path is not None else (
            env.get("APIPROF_METRICS_PATH") or None)
        port: int | None = self.metrics_port
        if port is None and env.get("APIPROF_METRICS_PORT"):
            try:
                port = int(env["APIPROF_METRICS_PORT"])
            except ValueError:
                raise ConfigurationError("APIPROF_METRICS_PORT must be a port number") from None
        token = self.metrics_token or env.get("APIPROF_METRICS_TOKEN") or self.token
        _check_metrics(path, port, token, self.metrics_buckets)
        return path, port, token

    def resolved_pyroscope(self) -> tuple[str | None, str | None]:
        """(url, token) of the Pyroscope server: the options, else $APIPROF_PYROSCOPE_URL
        and $APIPROF_PYROSCOPE_TOKEN."""
        env = os.environ
        url = self.pyroscope_url or env.get("APIPROF_PYROSCOPE_URL") or None
        _check_pyroscope(url)
        return url, self.pyroscope_token or env.get("APIPROF_PYROSCOPE_TOKEN") or None

    def resolved_service(self) -> str | None:
        """``service``, else $APIPROF_SERVICE, else None."""
        return self.service if self.service is not None else (
            os.environ.get("APIPROF_SERVICE") or None)

    def resolved_stats_dir(self) -> str | None:
        """``stats_dir``, else $APIPROF_STATS_DIR, else None (no statistics files)."""
        directory = self.stats_dir if self.stats_dir is not None else os.environ.get(
            "APIPROF_STATS_DIR")
        return os.fspath(directory) if directory else None


def _check_metrics(path: str | None, port: int | None, token: str | None,
                   buckets: tuple[float, ...]) -> None:
    if path is None and port is None:
        return
    if token is None or len(token) < MIN_TOKEN_CHARS or not token.isprintable():
        raise ConfigurationError(
            f"metrics need a token of at least {MIN_TOKEN_CHARS} printable characters "
            "(metrics_token, $APIPROF_METRICS_TOKEN or token): they are never open")
    if path is not None and (not path.startswith("/") or path.endswith("/") and path != "/"):
        raise ConfigurationError("metrics_path must start with '/' and not end with '/'")
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError("metrics_port must be in 1..65535")
    if not (0 < len(buckets) <= 64 and all(b > 0 for b in buckets)
            and list(buckets) == sorted(set(buckets))):
        raise ConfigurationError("metrics_buckets must be 1 to 64 ascending positive seconds")


def _check_pyroscope(url: str | None) -> None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigurationError("pyroscope_url must be an http:// or https:// URL")
