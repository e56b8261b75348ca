"""Prometheus metrics of the route statistics (docs/metrics.md): the exposition (C,
``RouteTable.prometheus``) of this worker's table or of the merge of every worker's
statistics file, served at an opt-in path of the app or on an opt-in port, behind a
bearer token compared in constant time."""

from __future__ import annotations

import hmac
import http.server
import os
import socket
import threading
from collections.abc import Callable

from .. import _core
from .http import Scope, Send, header, respond
from .stats_files import read_dir

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency bucket bounds in seconds (Prometheus' client defaults, finer at the low end).
DEFAULT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0)


def bearer_ok(value: bytes | None, token: bytes) -> bool:
    """Whether an Authorization header value is ``Bearer <token>``; constant time in the
    token's content."""
    given = value or b""
    scheme, _, credentials = given.partition(b" ")
    ok = hmac.compare_digest(credentials.strip(), token)
    return scheme.lower() == b"bearer" and ok


class Metrics:
    """The exposition of one middleware's statistics. ``table`` is this worker's table;
    with ``stats_dir``, ``flush`` writes this worker's file first and the answer is the
    merge of every worker file in the directory (so any worker that answers a scrape gives
    the same, monotonic totals: each file only grows, and each is read at its newest)."""

    def __init__(self, table: _core.RouteTable, stats_dir: str | None,
                 flush: Callable[[], None], token: str, labels: tuple[tuple[str, str], ...],
                 buckets_s: tuple[float, ...]) -> None:
        self._table = table
        self._dir = stats_dir
        self._flush = flush
        self.token = token.encode()
        self._labels = labels
        self._bounds = [round(b * 1e9) for b in buckets_s]

    def exposition(self) -> bytes:
        """The text exposition; never raises for a bad stats directory (the error is then
        reported as ``apiprof_metrics_merge_errors`` and this worker's table is served)."""
        workers, errors, table = 1, 0, self._table
        if self._dir is not None:
            self._flush()
            try:
                table, paths = read_dir(self._dir)
                workers = len(paths)
            except (OSError, ValueError):
                errors = 1
        text = table.prometheus(self._bounds, self._labels)
        extra = ",".join(f'{name}="{_escape(value)}"' for name, value in self._labels)
        braces = "{" + extra + "}" if extra else ""
        return text + (
            "# HELP apiprof_workers Worker statistics files merged into this answer.\n"
            "# TYPE apiprof_workers gauge\n"
            f"apiprof_workers{braces} {workers}\n"
            "# HELP apiprof_metrics_merge_errors 1 when the stats directory could not be "
            "merged (this worker's figures are served).\n"
            "# TYPE apiprof_metrics_merge_errors gauge\n"
            f"apiprof_metrics_merge_errors{braces} {errors}\n"
        ).encode()

    async def serve(self, scope: Scope, send: Send) -> None:
        """Answers a request for the metrics path: 401 without the right bearer token."""
        if not bearer_ok(header(scope, b"authorization"), self.token):
            await respond(send, 401, b"unauthorized\n", "text/plain; charset=utf-8",
                          [(b"www-authenticate", b'Bearer realm="apiprof metrics"')])
            return
        await respond(send, 200, self.exposition(), CONTENT_TYPE)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # every worker of a host binds the same port; whichever the kernel picks answers,
        # and all answer alike (the merged directory)
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def serve_port(metrics: Metrics, host: str, port: int, path: str) -> _Server:
    """Serves ``metrics`` at ``http://host:port{path}`` from a daemon thread of this
    process. Raises OSError when the port cannot be bound."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            if self.path.split("?", 1)[0] != path:
                self._answer(404, b"not found\n", "text/plain; charset=utf-8")
            elif not bearer_ok(self._authorization(), metrics.token):
                self._answer(401, b"unauthorized\n", "text/plain; charset=utf-8")
            else:
                self._answer(200, metrics.exposition(), CONTENT_TYPE)

        def _authorization(self) -> bytes | None:
            value = self.headers.get("authorization")
            return None if value is None else value.encode("latin-1", "replace")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "no-store")
            if status == 401:
                self.send_header("www-authenticate", 'Bearer realm="apiprof metrics"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = _Server((host, port), Handler)

    def serve() -> None:
        _core.untrace_thread()   # apiprof's own: no profiler records it
        server.serve_forever()

    threading.Thread(target=serve, name=f"apiprof-metrics-{os.getpid()}", daemon=True).start()
    return server
