"""Who may read profiles and which requests are profiled: the token check, the
on-demand report request, the slow-request capture policy, and the document kept."""

from __future__ import annotations

import gzip
import hmac
import time
from typing import Any

from .http import Message, Receive, Scope, header, query_value
from .request_profile import RequestProfiler

TOKEN_HEADER = b"x-apiprof-token"
TOKEN_QUERY = "apiprof"
PROFILE_HEADER = b"x-apiprof-profile"
REPORT_HEADER = b"x-apiprof-report"
REPORT_QUERY = "apiprof_report"
MIN_TOKEN_CHARS = 16

# What a kept profile's record says about its request (also handed to the profiler).
REQUEST_INFO = ("id", "kind", "route", "method", "path", "status", "wall_ns", "cpu_ns")


def authorized(scope: Scope, token: bytes) -> bool:
    """Whether the request carries ``token`` (header, else query). Constant time in
    the token's content; a request without one costs a header scan."""
    given = header(scope, TOKEN_HEADER) or b""
    if not given:
        given = (query_value(scope, TOKEN_QUERY) or "").encode("latin-1")
    return hmac.compare_digest(given, token)


def wants_report(scope: Scope) -> str | None:
    """The format an authorized request asks its profile in as the response ("json", or
    "html" for the HTML report), else None."""
    value = header(scope, REPORT_HEADER)
    asked = (value.decode("latin-1") if value is not None
             else query_value(scope, REPORT_QUERY) or "").lower()
    return asked if asked in ("json", "html") else None


async def read_body(receive: Receive, limit: int) -> tuple[list[Message], bool]:
    """The request's messages up to its last body part (or a disconnect), read before a
    slow-capture candidate is profiled so that a client slow to send its body never keeps
    the tracer on; and whether that is the whole body (False: more than ``limit`` bytes,
    the messages read so far are returned)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message.get("type") != "http.request" or not message.get("more_body", False):
            return messages, True
        size += len(message.get("body", b""))
        if size > limit:
            return messages, False


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` first, then reads on from ``receive``."""
    pending = list(messages)

    async def receive_again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return receive_again


class SlowCapture:
    """Slow-request capture: once a request took longer than ``slow_ns``, the next one
    (at most one per ``interval_ns``) is profiled as a candidate and kept only if it is
    slow too. Profiling is never started for a request already running, so the first
    slow request of a route only arms the capture. A candidate's body is read before
    its profile starts, and its profile is stopped after ``max_ns`` or when an
    on-demand request comes (it is then not kept): no client holds the tracer."""

    def __init__(self, slow_ns: int, interval_ns: int, max_ns: int, body_bytes: int) -> None:
        self.slow_ns = slow_ns
        self.interval_ns = interval_ns
        self.max_ns = max_ns
        self.body_bytes = body_bytes
        self.armed = False
        self.next_ns = 0
        self.candidates = 0  # requests profiled as slow-capture candidates
        self.kept = 0  # of which kept (they were slow)

    def saw(self, wall_ns: int) -> None:
        """A request (profiled or not) took ``wall_ns``."""
        if wall_ns > self.slow_ns:
            self.armed = True

    def take(self) -> bool:
        """Whether the request now starting is a candidate (call only when armed)."""
        now = time.monotonic_ns()
        if now < self.next_ns:
            return False
        self.armed = False
        self.next_ns = now + self.interval_ns
        self.candidates += 1
        return True

    def keep(self, record: dict[str, Any]) -> bool:
        """Whether a candidate's profile is kept: it was slow and its profile is whole."""
        if record["wall_ns"] <= self.slow_ns:
            return False
        self.armed = True  # a slow request was seen: the next may be captured
        if "error" in record:
            return False
        self.kept += 1
        return True


def document(profile: RequestProfiler, record: dict[str, Any], max_bytes: int) -> bytes:
    """The profile's JSON document gzipped, or b"" with record["error"] set (the profiler
    failed, or the document is larger than ``max_bytes``)."""
    info = {k: str(record[k]) for k in REQUEST_INFO}
    try:
        doc = gzip.compress(profile.result(info), compresslevel=1)
    except Exception as e:  # a broken profiler must not break the response
        record["error"] = f"{type(e).__name__}: {e}"
        return b""
    if len(doc) > max_bytes:
        record["error"] = (f"profile of {len(doc)} bytes (gzipped) exceeds "
                           f"max_profile_bytes ({max_bytes})")
        return b""
    return doc
