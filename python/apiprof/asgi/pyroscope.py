"""Pushes the profiles the middleware keeps to a Grafana Pyroscope server (docs/metrics.md):
a bounded queue filled on the request path (an append, never I/O; the oldest profile is
dropped when full) and a daemon thread per worker that, every interval, turns each queued
JSON document into a gzipped pprof (the C writer) and POSTs it with retries and backoff:
to ``/push.v1.PusherService/Push`` (the connect protocol, a protobuf body), or to
``/ingest`` for servers older than that API (``api="auto"`` falls back on a 404)."""

from __future__ import annotations

import base64
import collections
import gzip
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from .. import _core

# what Pyroscope shows for each sample type the pprof writer emits (the catalogue's pprof
# names); values are per stack (self), so not cumulative
_UNITS = {"count": "samples", "nanoseconds": "nanoseconds", "bytes": "bytes"}
# characters that end a name, a label or a value in Pyroscope's app{label=value,...}
_RESERVED = re.compile(r"[{}=,\s\"']")
PUSH_PATH = "/push.v1.PusherService/Push"
APIS = ("auto", "push", "ingest")
# what an older server answers for a path it does not serve
_NO_PUSH = (404, 405, 415)


def label_value(value: str) -> str:
    """A label value Pyroscope's name syntax can carry: a route template's ``{param}``
    becomes ``:param`` and any other reserved character (braces, ``=``, ``,``, quotes,
    white space) ``_``."""
    value = re.sub(r"\{([^{}]*)\}", r":\1", value)
    return _RESERVED.sub("_", value) or "_"


def app_name(service: str, labels: dict[str, str]) -> str:
    """``service{key=value,...}``, Pyroscope's name of a series."""
    inner = ",".join(f"{k}={label_value(v)}" for k, v in labels.items())
    return f"{label_value(service)}{{{inner}}}"


def sample_type_config() -> dict[str, dict[str, Any]]:
    """The ``sample_type_config`` form field: how to read each pprof sample type."""
    config: dict[str, dict[str, Any]] = {}
    for m in _core.metrics():
        if m["pprof"]:
            config[m["pprof"]] = {"units": _UNITS.get(m["unit"], "samples"),
                                  "display-name": m["pprof"], "aggregation": "sum",
                                  "cumulative": False}
    return config


def multipart(fields: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of file fields (name, filename, data) and its content
    type."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, filename, data in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class PyroscopePusher:
    """One per middleware. ``offer()`` is all a request does; ``start()`` (in each
    worker, at its first call) starts the pushing thread."""

    def __init__(self, url: str, service: str, interval_s: float = 10.0, queue_max: int = 32,
                 token: str | None = None, tenant: str | None = None, retries: int = 3,
                 backoff_s: float = 0.5, timeout_s: float = 5.0, api: str = "auto") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        self.api = "ingest" if api == "ingest" else "push"
        self._fallback = api == "auto"
        parts = urllib.parse.urlsplit(url)
        self._headers: dict[str, str] = {}
        if parts.username is not None:  # http://user:password@host (Grafana Cloud)
            auth = f"{urllib.parse.unquote(parts.username)}:" \
                   f"{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
            netloc = parts.hostname or ""
            netloc += f":{parts.port}" if parts.port else ""
            parts = parts._replace(netloc=netloc)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        if tenant:
            self._headers["X-Scope-OrgID"] = tenant
        self._base = urllib.parse.urlunsplit(parts).rstrip("/")
        self.service = service
        self.interval_s = interval_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._queue: collections.deque[tuple[dict[str, Any], bytes]] = collections.deque(
            maxlen=queue_max)
        self._wake = threading.Event()
        self._pid = 0
        self._config = json.dumps(sample_type_config()).encode()
        self.pushed = self.dropped = self.failed = 0
        self._warned = False

    def offer(self, record: dict[str, Any], document: bytes) -> None:
        """Queues a kept profile (its record and gzipped JSON document); when the queue
        is full the oldest one is dropped. No I/O, no lock held for long."""
        if record.get("error"):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((record, document))

    def start(self) -> None:
        """Starts this process's pushing thread (once per process)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._queue.clear()  # a forked worker does not push its parent's profiles
        threading.Thread(target=self._loop, name="apiprof-pyroscope", daemon=True).start()

    def flush(self) -> None:
        """Pushes everything queued now, in the calling thread (tests, shutdown)."""
        while self._queue:
            record, document = self._queue.popleft()
            self._push_one(record, document)

    def _loop(self) -> None:
        _core.untrace_thread()   # apiprof's own: no profiler records it
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception as e:  # never let the thread die: report once
                self._warn(f"{type(e).__name__}: {e}")

    def request(self, record: dict[str, Any], document: bytes) -> urllib.request.Request | None:
        """The request (Push or /ingest, as ``self.api``) for one kept profile, or None
        when it holds no profile."""
        try:
            profile = _core.loads(gzip.decompress(document))
            pprof = bytes(profile.report("pprof"))
        except (ValueError, OSError, EOFError, LookupError):
            return None
        labels = {"route": str(record.get("route") or ""), "host": socket.gethostname(),
                  "process": str(os.getpid())}
        if self.api == "push":
            # the pprof carries the samples' types; the server names the series
            # __name__:type:unit and takes the time from it or from its arrival
            pairs = [("__name__", "apiprof"), ("service_name", self.service), *labels.items()]
            body = _core.pyroscope_push_request(pairs, pprof)
            return urllib.request.Request(
                self._base + PUSH_PATH, data=body, method="POST",
                headers={**self._headers, "Content-Type": "application/proto",
                         "Connect-Protocol-Version": "1"})
        until = float(record.get("time") or time.time())
        start = until - int(record.get("wall_ns") or 0) / 1e9
        query = urllib.parse.urlencode({
            "name": app_name(self.service, labels), "from": int(start),
            "until": max(int(until), int(start) + 1), "format": "pprof", "spyName": "apiprof",
        })
        body, content_type = multipart([("profile", "profile.pprof", pprof),
                                        ("sample_type_config", "sample_type_config.json",
                                         self._config)])
        return urllib.request.Request(f"{self._base}/ingest?{query}", data=body, method="POST",
                                      headers={**self._headers, "Content-Type": content_type})

    def _push_one(self, record: dict[str, Any], document: bytes) -> None:
        req = self.request(record, document)
        if req is None:
            return
        delay = self.backoff_s
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
                self.pushed += 1
                return
            except urllib.error.HTTPError as e:
                if e.code in _NO_PUSH and self.api == "push" and self._fallback:
                    self.api = "ingest"  # a server older than Push: /ingest from now on
                    req = self.request(record, document)
                    if req is None:
                        return
                    continue
                if e.code < 500 and e.code != 429:  # the server refuses it: no retry
                    self._warn(f"HTTP {e.code} from {req.full_url.split('?')[0]}")
                    break
                why = f"HTTP {e.code}"
            except (OSError, urllib.error.URLError) as e:
                why = str(e)
            if attempt < self.retries:
                attempt += 1
                time.sleep(delay)
                delay *= 2
            else:
                self._warn(f"{why} from {req.full_url.split('?')[0]} after {self.retries} "
                           "retries")
                break
        self.failed += 1

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"apiprof: cannot push profiles to Pyroscope: {message}", file=sys.stderr)
