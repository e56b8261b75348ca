"""Pyroscope push: the middleware's kept profiles reach a Pyroscope-shaped receiver (a real
socket server here; no Pyroscope server is packaged) as the connect-protocol Push with its
protobuf body, or, from a server without Push, as POST /ingest with the documented query
and multipart body; the pushed pprof decodes with ``go tool pprof``; retries, backoff and
the bounded queue of the pusher."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiprof import Profiler
from apiprof.asgi import TOKEN_HEADER
from apiprof.asgi.pyroscope import PUSH_PATH, PyroscopePusher, app_name, label_value
from apiprof.errors import ConfigurationError
from apiprof.fastapi import instrument
from helpers import REPO_ROOT

APPS = REPO_ROOT / "tests" / "py" / "apps"
TOKEN = "pyroscope-test-token-0123456789"
GO = shutil.which("go")
# Go reads the pprof with its build cache in the usual place (a fresh HOME rebuilds the
# pprof tool: minutes) and without the sanitizer runtime `make sanitize` preloads.
GO_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
NAME = re.compile(r"^([^{}]+)\{((?:[^{}=,]+=[^{}=,]+)(?:,[^{}=,]+=[^{}=,]+)*)\}$")


class Receiver(http.server.ThreadingHTTPServer):
    """Accepts Push and POST /ingest as Pyroscope documents them (``old``: a server without
    Push, which answers it 404); ``fail`` statuses are answered first, one per request,
    then 200. Every request is kept (path, query, headers, labels, the pprof) and every
    problem with its shape is recorded in ``problems``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.fail: list[int] = []
        self.old = False
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        headers = {k.lower(): v for k, v in self.headers.items()}
        content_type = self.headers.get("content-type", "")
        if url.path == PUSH_PATH:
            problems, labels, profile = check_push(headers, body)
        else:
            problems = check_shape(url.path, query, content_type, body)
            labels = labels_of(query["name"]) if NAME.match(query.get("name", "")) else {}
            profile = form_parts(content_type, body).get("profile", (None, b""))[1]
        with self.server.lock:
            if url.path == PUSH_PATH and self.server.old:
                status = 404
            else:
                self.server.requests.append({"path": url.path, "query": query,
                                             "labels": labels, "profile": profile,
                                             "headers": headers})
                self.server.problems += problems
                status = self.server.fail.pop(0) if self.server.fail else 200
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def form_parts(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, data) of a multipart/form-data body."""
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts: dict[str, tuple[str | None, bytes]] = {}
    if not msg.is_multipart():
        return parts
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        parts[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


def fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of each length-delimited field of a protobuf message."""
    i = 0

    def varint() -> int:
        nonlocal i
        v = shift = 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v

    while i < len(data):
        key = varint()
        assert key & 7 == 2, f"wire type {key & 7}"
        n = varint()
        yield key >> 3, data[i:i + n]
        i += n


def check_push(headers: dict[str, str], body: bytes
               ) -> tuple[list[str], dict[str, str], bytes]:
    """What differs from the documented Push (push.v1.PushRequest of one series with
    __name__ and service_name labels and one gzipped raw sample, sent as application/proto
    by the connect protocol), and the series' labels and pprof."""
    problems = []
    if headers.get("content-type") != "application/proto":
        problems.append(f"content-type {headers.get('content-type')!r}")
    if headers.get("connect-protocol-version") != "1":
        problems.append("no Connect-Protocol-Version: 1")
    series = [v for k, v in fields(body) if k == 1]
    if len(series) != 1:
        return problems + [f"{len(series)} series"], {}, b""
    labels: dict[str, str] = {}
    samples = []
    for k, v in fields(series[0]):
        if k == 1:
            pair = dict(fields(v))
            labels[pair[1].decode()] = pair[2].decode()
        elif k == 2:
            samples.append(dict(fields(v)).get(1, b""))
    if labels.get("__name__") != "apiprof" or not labels.get("service_name"):
        problems.append(f"labels {labels}")
    if len(samples) != 1 or samples[0][:2] != b"\x1f\x8b":
        problems.append("no gzipped raw sample")
    return problems, labels, samples[0] if samples else b""


def check_shape(path: str, query: dict[str, str], content_type: str, body: bytes) -> list[str]:
    """What differs from the documented /ingest request (name, from, until as UNIX
    seconds, format=pprof, a multipart body whose file field "profile" holds the pprof
    and "sample_type_config" JSON)."""
    problems = []
    if path != "/ingest":
        problems.append(f"path {path}")
    if not NAME.match(query.get("name", "")):
        problems.append(f"name {query.get('name')!r}")
    if not (query.get("from", "").isdigit() and query.get("until", "").isdigit()
            and int(query["from"]) <= int(query["until"])):
        problems.append(f"from/until {query.get('from')!r} {query.get('until')!r}")
    if query.get("format") != "pprof":
        problems.append(f"format {query.get('format')!r}")
    if not content_type.startswith("multipart/form-data; boundary="):
        problems.append(f"content-type {content_type!r}")
    parts = form_parts(content_type, body)
    profile = parts.get("profile")
    if profile is None or not profile[0] or profile[1][:2] != b"\x1f\x8b":
        problems.append("no gzipped file field 'profile'")
    config = parts.get("sample_type_config")
    if config is None or not config[0]:
        problems.append("no file field 'sample_type_config'")
    else:
        types = json.loads(config[1])
        if types.get("wall", {}).get("cumulative") is not False:
            problems.append(f"sample_type_config {types}")
    return problems


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def labels_of(name: str) -> dict[str, str]:
    """The labels of an /ingest name, the service as "service_name" (as Push has it)."""
    m = NAME.match(name)
    assert m, name
    return {"service_name": m.group(1), **dict(kv.split("=", 1) for kv in m.group(2).split(","))}


def wait_for(cond: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.skipif(GO is None, reason="go is not installed (go tool pprof decodes the push)")
def test_workers_push_kept_profiles(serve: Any, receiver: Receiver, tmp_path: Path) -> None:
    server = serve("pyroscope_app:app", cwd=APPS,
                   env={"APP_TOKEN": TOKEN, "APIPROF_PYROSCOPE_URL": receiver.url,
                        "APIPROF_SERVICE": "pyro-shop"})
    for _ in range(2):
        r = httpx.get(f"{server.url}/work", headers={TOKEN_HEADER.decode(): TOKEN},
                      trust_env=False, timeout=30)
        assert r.status_code == 200
    httpx.get(f"{server.url}/work", trust_env=False, timeout=30)  # not profiled: not pushed
    wait_for(lambda: len(receiver.requests) >= 2)
    time.sleep(0.5)  # a further interval: nothing else arrives
    assert receiver.problems == []
    assert len(receiver.requests) == 2
    pids = set()
    for req in receiver.requests:
        assert req["path"] == PUSH_PATH
        labels = req["labels"]
        assert labels["service_name"] == "pyro-shop"
        assert labels["route"] == "/work" and labels["host"] == socket.gethostname()
        pids.add(labels["process"])
    assert len(pids) == 1 and pids != {str(os.getpid())}  # the worker's pid, not ours
    # the pprof as Go's own tool reads it
    path = tmp_path / "pushed.pb.gz"
    path.write_bytes(receiver.requests[0]["profile"])
    raw = subprocess.run([str(GO), "tool", "pprof", "-raw", str(path)], capture_output=True,
                         text=True, timeout=120, env=GO_ENV)
    assert raw.returncode == 0, raw.stderr
    assert "wall/nanoseconds" in raw.stdout  # the sample types of the request profile
    assert "planted_work" in raw.stdout
    top = subprocess.run([str(GO), "tool", "pprof", "-top", "-sample_index=wall", str(path)],
                         capture_output=True, text=True, timeout=120, env=GO_ENV)
    assert top.returncode == 0, top.stderr
    row = next(line for line in top.stdout.splitlines() if "planted_work" in line)
    # flat flat% sum% cum cum%: its 20 ms of CPU (with the clock calls under it) are
    # wall time of the request
    assert _seconds(row.split()[3]) >= 0.019, row


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(ns|us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def _document() -> bytes:
    def hot() -> int:
        return sum(range(20000))

    with Profiler() as p:
        hot()
    return gzip.compress(bytes(p.profile.json()))


@pytest.mark.skipif(GO is None, reason="go is not installed (go tool pprof decodes the push)")
def test_a_server_without_push_gets_ingest(receiver: Receiver, tmp_path: Path) -> None:
    """api="auto" (the default): a 404 for Push switches the pusher to /ingest, for this
    profile and the next ones, with the same profile and labels."""
    receiver.old = True
    pusher = PyroscopePusher(receiver.url, "old-shop")
    doc = _document()
    for route in ("/items/{item_id}", "/b"):
        pusher.offer({"id": route, "route": route, "time": time.time(), "wall_ns": 10**6}, doc)
    pusher.flush()
    assert receiver.problems == [] and pusher.api == "ingest"
    assert (pusher.pushed, pusher.failed) == (2, 0)
    assert [r["path"] for r in receiver.requests] == ["/ingest", "/ingest"]
    req = receiver.requests[0]
    assert req["labels"]["service_name"] == "old-shop"
    assert req["labels"]["route"] == "/items/:item_id"
    assert req["query"]["spyName"] == "apiprof"
    assert int(req["query"]["until"]) - int(req["query"]["from"]) <= 2
    assert abs(int(req["query"]["until"]) - time.time()) < 60
    path = tmp_path / "ingested.pb.gz"
    path.write_bytes(req["profile"])
    raw = subprocess.run([str(GO), "tool", "pprof", "-raw", str(path)], capture_output=True,
                         text=True, timeout=120, env=GO_ENV)
    assert raw.returncode == 0 and "hot" in raw.stdout, raw.stderr
    # api="push" does not fall back: the 404 is a refusal
    only = PyroscopePusher(receiver.url, "svc", api="push", retries=0)
    only.offer({"id": "x", "route": "/x", "time": time.time(), "wall_ns": 1}, doc)
    only.flush()
    assert (only.pushed, only.failed, only.api) == (0, 1, "push")
    with pytest.raises(ValueError, match="api must be one of"):
        PyroscopePusher(receiver.url, "svc", api="grpc")


def test_retries_with_backoff_then_gives_up(receiver: Receiver) -> None:
    doc = _document()
    pusher = PyroscopePusher(receiver.url, "svc", retries=2, backoff_s=0.01)
    receiver.fail = [503, 429]
    pusher.offer({"id": "a", "route": "/r", "time": time.time(), "wall_ns": 1000}, doc)
    pusher.flush()
    assert (pusher.pushed, pusher.failed, len(receiver.requests)) == (1, 0, 3)
    receiver.fail = [503, 503, 503]
    pusher.offer({"id": "b", "route": "/r", "time": time.time(), "wall_ns": 1000}, doc)
    pusher.flush()
    assert (pusher.pushed, pusher.failed, len(receiver.requests)) == (1, 1, 6)
    receiver.fail = [400]  # refused: not retried
    pusher.offer({"id": "c", "route": "/r", "time": time.time(), "wall_ns": 1000}, doc)
    pusher.flush()
    assert (pusher.pushed, pusher.failed, len(receiver.requests)) == (1, 2, 7)
    assert receiver.problems == []


def test_bounded_queue_drops_oldest(receiver: Receiver) -> None:
    doc = _document()
    pusher = PyroscopePusher(receiver.url, "svc", queue_max=2, token="tok", tenant="t1")
    for i in range(5):
        pusher.offer({"id": str(i), "route": f"/r{i}", "time": time.time(), "wall_ns": 1}, doc)
    pusher.offer({"id": "x", "route": "/bad", "error": "no profile"}, b"")  # not queued
    assert pusher.dropped == 3
    pusher.flush()
    routes = [r["labels"]["route"] for r in receiver.requests]
    assert routes == ["/r3", "/r4"] and pusher.pushed == 2
    headers = receiver.requests[0]["headers"]
    assert headers["authorization"] == "Bearer tok" and headers["x-scope-orgid"] == "t1"


def test_unreachable_server_costs_requests_nothing() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    pusher = PyroscopePusher(f"http://127.0.0.1:{port}", "svc", retries=1, backoff_s=0.01,
                             timeout_s=1)
    doc = _document()
    pusher.offer({"id": "a", "route": "/r", "time": time.time(), "wall_ns": 1}, doc)
    assert len(pusher._queue) == 1 and pusher.pushed == 0  # offer did no I/O
    pusher.flush()
    assert pusher.failed == 1 and pusher.pushed == 0


def test_names_and_options() -> None:
    assert label_value("/items/{item_id}") == "/items/:item_id"
    assert label_value('a,b=c"d e}') == "a_b_c_d_e_"
    assert app_name("my app", {"route": "/x/{y}", "host": "h"}) == "my_app{route=/x/:y,host=h}"
    with pytest.raises(ConfigurationError, match="pyroscope_url"):
        instrument(type("A", (), {"add_middleware": lambda *a, **k: None})(),
                   pyroscope_url="ftp://x")
    with pytest.raises(ConfigurationError, match="pyroscope_api"):
        instrument(type("A", (), {"add_middleware": lambda *a, **k: None})(),
                   pyroscope_url="http://x", pyroscope_api="grpc")
    basic = PyroscopePusher("http://user:p%40ss@127.0.0.1:1/", "svc", api="ingest")
    req = basic.request({"route": "/r", "time": time.time(), "wall_ns": 1}, _document())
    assert req is not None and req.full_url.startswith("http://127.0.0.1:1/ingest?")
    assert req.get_header("Authorization") == "Basic dXNlcjpwQHNz"
