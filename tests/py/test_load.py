"""apiprof-load and `apiprof bench` against real servers: a uvicorn app and a deliberately
broken TCP server written here."""

from __future__ import annotations

import json
import os
import pty
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import apiprof
import pytest
from conftest import CLEAN_EXIT_CODES

APPS_DIR = Path(__file__).resolve().parent / "apps"
LOAD = Path(apiprof.__file__).resolve().parent / "bin" / "apiprof-load"
APIPROF = Path(sys.executable).with_name("apiprof")


def load(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LOAD), *args], capture_output=True, text=True, timeout=timeout)


def load_json(*args: str, timeout: float = 60) -> dict:
    r = load("--json", *args, timeout=timeout)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # not a terminal: no progress line, nothing extra
    return json.loads(r.stdout)


def warm(result: dict) -> dict:
    return result["phases"]["warm"]


@pytest.fixture(scope="module")
def app(serve_module):
    return serve_module("loadapp:app", cwd=APPS_DIR, health="/fast")


# ---- a broken server ---------------------------------------------------------------


class BrokenServer:
    """TCP server on 127.0.0.1 answering every request according to ``mode``:

    chunked          valid chunked responses with extensions and trailers, sent in pieces
    close_delimited  a body without length, then close (the client must reconnect)
    close_mid        Content-Length 100, ten bytes, then close
    garbage          bytes that are not HTTP
    reset            an RST instead of an answer
    stall            never answers
    stall_once       fast answers, except request ``stall_at``, which holds every
                     connection for one second
    A connection is handled per thread; responses are serialised by one lock, so a stall
    stops them all. After ``max_connections`` accepted connections the listener closes.
    """

    def __init__(self, mode: str, stall_at: int = 0, max_connections: int = 0) -> None:
        self.mode, self.stall_at, self.max_connections = mode, stall_at, max_connections
        self.lock = threading.Lock()
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self) -> None:
        accepted = 0
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            accepted += 1
            if self.max_connections and accepted >= self.max_connections:
                self.listener.close()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")
                with self.lock:
                    self.requests += 1
                    if not self.answer(conn, self.requests):
                        return

    def answer(self, conn: socket.socket, n: int) -> bool:
        """Send the answer to request n; False closes the connection."""
        mode = self.mode
        if mode == "chunked":
            for piece in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r",
                          b"\nhello\r\n6;ext=1\r\n wor", b"ld\r\n0\r\nX-Trailer: yes\r\n",
                          b"X-Other: 2\r\n\r\n"):
                conn.sendall(piece)
            return True
        if mode == "close_delimited":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until the end")
            return False
        if mode == "close_mid":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            return False
        if mode == "garbage":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            return False
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if mode == "stall":
            conn.recv(1)  # until the client gives up and closes
            return False
        if n == self.stall_at:
            time.sleep(1.0)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def broken():
    servers: list[BrokenServer] = []

    def make(mode: str, **kw: int) -> BrokenServer:
        servers.append(BrokenServer(mode, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# ---- exact counts against uvicorn ---------------------------------------------------


def test_fixed_count_is_exact(app):
    r = load_json("-n", "200", "-c", "4", "-t", "2", f"{app.url}/fast")
    w = warm(r)
    assert w["requests"] == 200
    assert w["status"] == {"200": 200}
    assert w["errors"] == {"connect": 0, "timeout": 0, "reset": 0, "parse": 0}
    assert w["unfinished"] == 0
    assert w["latency_ms"]["count"] == 200
    assert 0 < w["latency_ms"]["p50"] <= w["latency_ms"]["p99"] <= w["latency_ms"]["max"]
    assert r["phases"]["cold"] is None and w["uncorrected_latency_ms"] is None
    assert w["bytes_received"] > 200 * len("HTTP/1.1 200 OK\r\n")
    assert w["bytes_sent"] == 200 * w["bytes_sent"] // 200 > 0


def test_url_file_weights_methods_bodies_and_chunked(app, tmp_path):
    (tmp_path / "body.json").write_text('{"n": 1}')
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "# weight method url body\n"
        "\n"
        "3 /fast\n"
        "1 POST /echo @body.json\n"
        "1 POST /echo {\"n\": 1}\n"
        "2 GET /status/404\n"
        "1 /chunked\n"
    )
    r = load_json("-n", "80", "-c", "2", "-t", "2", "--urls", str(urls), "--base", app.url)
    per_url = {u["name"]: u for u in warm(r)["urls"]}
    assert [u["weight"] for u in warm(r)["urls"]] == [3, 1, 1, 2, 1]
    assert per_url["GET /fast"]["status"] == {"200": 30}
    echo = [u for u in warm(r)["urls"] if u["name"] == "POST /echo"]
    assert [u["status"] for u in echo] == [{"200": 10}, {"200": 10}]
    assert per_url["GET /status/404"]["status"] == {"404": 20}
    chunked = per_url["GET /chunked"]
    assert chunked["status"] == {"200": 10}
    assert chunked["bytes_received"] > 10 * 3000
    assert warm(r)["requests"] == 80 and warm(r)["status"] == {"200": 60, "404": 20}


def test_text_table_and_warmup_phase(app):
    r = load("-d", "0.5", "--warmup", "0.3", "-c", "2", "-t", "1", f"{app.url}/fast")
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("phase"))
    assert header.split()[:9] == ["phase", "url", "requests", "req/s", "p50", "p90", "p99",
                                  "p99.9", "max"]
    rows = [line.split() for line in lines if line.startswith(("warm ", "cold "))]
    assert rows[0][0] == "warm" and rows[1][0] == "cold"
    assert int(rows[0][2]) > 0 and int(rows[1][2]) > 0
    # aligned: every row of the first table has the header's width
    assert all(len(line) == len(header) for line in lines[lines.index(header) + 1:][:2])


# ---- the broken server: every request ends exactly once, classified ----------------


def test_chunked_with_trailers_in_pieces(broken):
    s = broken("chunked")
    w = warm(load_json("-n", "50", "-c", "3", "-t", "1", s.url))
    assert w["status"] == {"200": 50} and sum(w["errors"].values()) == 0
    assert s.requests == 50  # keep-alive: no request lost or repeated


def test_close_delimited_bodies_reconnect(broken):
    s = broken("close_delimited")
    w = warm(load_json("-n", "30", "-c", "2", "-t", "1", s.url))
    assert w["status"] == {"200": 30} and sum(w["errors"].values()) == 0


@pytest.mark.parametrize("mode,kind", [("close_mid", "reset"), ("garbage", "parse"),
                                       ("reset", "reset")])
def test_errors_are_classified(broken, mode, kind):
    s = broken(mode)
    w = warm(load_json("-n", "30", "-c", "3", "-t", "1", s.url))
    assert w["requests"] == 0 and w["unfinished"] == 0
    assert w["errors"] == {"connect": 0, "timeout": 0, "reset": 0, "parse": 0, kind: 30}


def test_stalled_server_times_out_without_hanging(broken):
    s = broken("stall")
    started = time.monotonic()
    w = warm(load_json("-n", "3", "-c", "3", "-t", "1", "--timeout", "0.5", s.url, timeout=20))
    assert time.monotonic() - started < 5.0
    assert w["errors"]["timeout"] == 3 and w["requests"] == 0


def test_refused_connections_count_as_connect_errors(broken):
    # the listener closes after 5 connections: the preflight one and four requests
    s = broken("close_delimited", max_connections=5)
    w = warm(load_json("-n", "20", "-c", "1", "-t", "1", s.url))
    assert w["requests"] == 4
    assert w["errors"] == {"connect": 16, "timeout": 0, "reset": 0, "parse": 0}


# ---- open model ------------------------------------------------------------------------


def test_open_model_reaches_the_target_rate(app):
    r = load_json("-R", "300", "-d", "2", "-c", "4", "-t", "1", f"{app.url}/fast")
    w = warm(r)
    assert r["config"]["model"] == "open"
    assert abs(w["rps"] - 300) <= 15, w["rps"]
    assert w["uncorrected_latency_ms"]["count"] == w["requests"]


def test_open_model_corrects_for_coordinated_omission(broken):
    s = broken("stall_once", stall_at=150)
    w = warm(load_json("-R", "200", "-d", "3", "-c", "2", "-t", "1", s.url, timeout=30))
    corrected, uncorrected = w["latency_ms"], w["uncorrected_latency_ms"]
    assert corrected["max"] >= 900 and uncorrected["max"] >= 900  # the stalled request itself
    assert corrected["p99"] >= 700, corrected  # the requests that should have gone out meanwhile
    assert uncorrected["p99"] < 250, uncorrected  # a closed view sees only the in-flight two
    assert sum(w["errors"].values()) == 0


# ---- command line ------------------------------------------------------------------------

BAD_ARGS = [
    (["-c", "0", "http://127.0.0.1:9/"], 2, "--connections"),
    (["-c", "many", "http://127.0.0.1:9/"], 2, "--connections"),
    (["-d", "-1", "http://127.0.0.1:9/"], 2, "--duration"),
    (["-d", "1", "-n", "5", "http://127.0.0.1:9/"], 2, "exclude each other"),
    (["--bogus", "http://127.0.0.1:9/"], 2, "unknown option"),
    (["-c"], 2, "needs a value"),
    ([], 2, "no URL"),
    (["https://127.0.0.1:9/"], 2, "https is not supported"),
    (["ftp://127.0.0.1/"], 2, "not an http:// URL"),
    (["http://127.0.0.1:99999/"], 2, "bad port"),
    (["-H", "NoColon", "http://127.0.0.1:9/"], 2, "Name: value"),
    (["--urls", "/nonexistent/urls.txt"], 2, "No such file"),
    (["-t", "4", "-c", "2", "http://127.0.0.1:9/"], 2, "--threads"),
]


@pytest.mark.parametrize("args,code,text", BAD_ARGS)
def test_bad_arguments_one_line(args, code, text):
    r = load(*args)
    assert r.returncode == code
    assert r.stderr.count("\n") == 1 and text in r.stderr, r.stderr
    assert r.stdout == ""
    b = subprocess.run([str(APIPROF), "bench", *args], capture_output=True, text=True,
                       timeout=60)
    assert b.returncode == code and b.stderr.count("\n") == 1 and "Traceback" not in b.stderr


def test_url_file_errors_name_the_line(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("/ok\n0 /zero-weight\n")
    r = load("--urls", str(urls), "--base", "http://127.0.0.1:9")
    assert r.returncode == 2 and f"{urls}:2: weight must be" in r.stderr
    urls.write_text("http://127.0.0.1:9/a\nhttp://127.0.0.1:10/b\n")
    r = load("--urls", str(urls))
    assert r.returncode == 2 and "share the origin" in r.stderr
    urls.write_text("# nothing\n")
    r = load("--urls", str(urls))
    assert r.returncode == 2 and "no URL" in r.stderr and r.stderr.count("\n") == 1


def test_unreachable_url_is_one_line_and_exit_1():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = load("-n", "5", f"http://127.0.0.1:{port}/")
    assert r.returncode == 1
    assert r.stderr == f"apiprof-load: cannot connect to http://127.0.0.1:{port}: " \
                       "Connection refused\n"


def test_progress_line_only_on_a_terminal(app):
    master, slave = pty.openpty()
    try:
        p = subprocess.run([str(LOAD), "-d", "1.3", "-c", "2", "-t", "1", f"{app.url}/fast"],
                           stdout=subprocess.PIPE, stderr=slave, timeout=60)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert p.returncode == 0
    assert b"req/s" in seen and b"p99" in seen
    assert seen.endswith(b"\r\x1b[K")  # cleared before the table
    assert b"req/s" in p.stdout and b"\x1b" not in p.stdout


# ---- apiprof bench ------------------------------------------------------------------------


def test_bench_url_passes_through(app):
    r = subprocess.run([str(APIPROF), "bench", "--json", "-n", "40", "-c", "2", "-t", "1",
                        f"{app.url}/fast"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert warm(json.loads(r.stdout))["status"] == {"200": 40}


def test_bench_app_starts_measures_and_stops(tmp_path):
    out = tmp_path / "result.json"
    r = subprocess.run([str(APIPROF), "bench", "--app", "loadapp:app", "--app-dir",
                        str(APPS_DIR), "-n", "60", "--warmup", "0.3", "-c", "2", "-t", "1",
                        "-o", str(out), "/fast"], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "cold" in r.stdout and "warm" in r.stdout and f"result: {out}" in r.stdout
    result = json.loads(out.read_text())
    assert result["tool"] == "apiprof-bench" and result["app"] == "loadapp:app"
    assert result["server"]["exit_code"] in CLEAN_EXIT_CODES
    assert result["profile"] is None
    phases = result["load"]["phases"]
    assert phases["warm"]["status"] == {"200": 60}
    assert phases["cold"]["requests"] > 0 and phases["cold"]["elapsed_s"] == pytest.approx(0.3)
    # a plain ASGI app has no routes: one row per method and path
    (row,) = result["routes"]["warm"]
    assert row["name"] == "GET /fast" and row["route"] is None and row["requests"] == 60
    assert result["routes"]["cold"][0]["requests"] == phases["cold"]["requests"]


def test_bench_app_that_fails_to_start(tmp_path):
    r = subprocess.run([str(APIPROF), "bench", "--app", "no_such_module:app", "--app-dir",
                        str(tmp_path), "-n", "5", "-o", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "exited with code" in r.stderr
    assert not (tmp_path / "r.json").exists()


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(APIPROF), "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def profile_calls(path: Path, phase: str | None) -> dict[str, int]:
    prof = apiprof._core.load(str(path))
    if phase is not None:
        prof = prof.select({"phase": phase})
    return {f["qualname"]: f["calls"] for f in prof.functions()}


HOT_URLS = "2 /items/1\n1 /items/2?x=1\n1 /health\n1 POST /items {}\n"


def test_bench_profile_trace_per_route_cold_and_warm_exact(tmp_path):
    """The phase gate makes the split exact: every cold request has ended before the
    server's profile moves to phase=warm, and no measured request starts before."""
    urls = tmp_path / "urls.txt"
    urls.write_text(HOT_URLS)
    out = tmp_path / "r.json"
    r = bench("--app", "hotapp:app", "--app-dir", str(APPS_DIR), "--profile", "trace",
              "--urls", str(urls), "--health", "/health", "-n", "100", "--warmup", "0.3",
              "-c", "4", "-t", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    result = json.loads(out.read_text())
    profile = tmp_path / "r.apiprof"
    assert result["profile"]["file"] == str(profile) and result["profile"]["mode"] == "trace"
    assert result["profile"]["phases"] == ["cold", "warm"]
    assert result["server"]["exit_code"] in CLEAN_EXIT_CODES

    warm_rows = {row["name"]: row for row in result["routes"]["warm"]}
    assert {n: row["requests"] for n, row in warm_rows.items()} == {
        "GET /items/{item_id}": 60, "GET /health": 20, "POST /items": 20}
    items = warm_rows["GET /items/{item_id}"]
    assert items["urls"] == ["GET /items/1", "GET /items/2?x=1"]
    assert items["status"] == {"200": 60} and warm_rows["POST /items"]["status"] == {"201": 20}
    url_rows = result["load"]["phases"]["warm"]["urls"][:2]
    assert items["latency_ms"]["count"] == 60
    assert items["latency_ms"]["max"] == max(u["latency_ms"]["max"] for u in url_rows)
    assert items["latency_ms"]["min"] == min(u["latency_ms"]["min"] for u in url_rows)
    assert items["endpoint"] == f"{APPS_DIR / 'hotapp.py'}:23(get_item)"

    warm = profile_calls(profile, "warm")
    assert warm["hot"] == 80  # 60 GET /items/{id} + 20 POST /items: exactly the window's
    assert warm["get_item"] == items["profile"]["calls"] == 60
    assert warm["create_item"] == warm_rows["POST /items"]["profile"]["calls"] == 20
    assert warm["health"] == warm_rows["GET /health"]["profile"]["calls"] == 20

    cold_rows = {row["name"]: row for row in result["routes"]["cold"]}
    cold = profile_calls(profile, "cold")
    cold_items = cold_rows["GET /items/{item_id}"]["requests"]
    cold_posts = cold_rows["POST /items"]["requests"]
    assert cold_items > 0 and cold["get_item"] == cold_items
    assert cold["hot"] == cold_items + cold_posts
    # the cold phase also holds the start-up and the readiness polls of /health
    assert cold["health"] > cold_rows["GET /health"]["requests"]
    assert profile_calls(profile, None)["hot"] == cold["hot"] + warm["hot"]

    assert "GET /items/{item_id}" in r.stdout and "(get_item)" in r.stdout
    assert f"apiprof report {profile} --phase warm" in r.stdout
    report = subprocess.run([str(APIPROF), "report", str(profile), "--phase", "warm",
                             "--format", "json"], capture_output=True, text=True, timeout=60)
    assert {f["qualname"]: f["calls"] for f in json.loads(report.stdout)["functions"]}["hot"] == 80


def test_bench_profile_trace_open_model_without_warmup(tmp_path):
    out = tmp_path / "open.json"
    r = bench("--app", "hotapp:app", "--app-dir", str(APPS_DIR), "--profile", "trace",
              "--json", "-R", "300", "-n", "45", "-c", "3", "-t", "1", "-o", str(out),
              "/items/5")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result == json.loads(out.read_text())
    assert result["routes"]["cold"] is None
    (row,) = result["routes"]["warm"]
    assert row["name"] == "GET /items/{item_id}" and row["requests"] == 45
    assert row["uncorrected_latency_ms"]["count"] == 45 and row["profile"]["calls"] == 45
    profile = tmp_path / "open.apiprof"
    assert profile_calls(profile, "warm")["hot"] == 45
    # the readiness polls (/items/5 too) ran before the gate
    assert profile_calls(profile, "cold")["hot"] >= 1


@pytest.mark.parametrize("args,text", [
    (["--profile", "trace", "http://127.0.0.1:9/"], "--profile needs --app"),
    (["--app", "hotapp:app", "--profile-memory", "full", "/health"],
     "--profile-memory and --profile-queries go with --profile trace"),
    (["--profile-queries", "http://127.0.0.1:9/"],
     "--profile-memory and --profile-queries go with --profile trace"),
    (["--app", "hotapp:app", "--profile", "trace", "-o", "/nonexistent/r.json", "/health"],
     "cannot write /nonexistent/r.json: no directory /nonexistent"),
    (["--app", "hotapp:app", "--profile", "trace", "-o", "r.apiprof", "/health"],
     "the profile goes to FILE.apiprof"),
    (["--app", "hotapp:app", "--profile", "cpu", "/health"], "invalid choice"),
    (["--app", "hotapp:app", "--profile", "trace", "http://127.0.0.1:9/x"],
     "with --app, give a /path"),
])
def test_bench_profile_bad_combinations_one_line(args, text):
    r = bench(*args, "--app-dir", str(APPS_DIR)) if "--app" in args else bench(*args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and text in r.stderr, r.stderr
    assert r.stdout == ""


def test_bench_app_relative_output_is_the_users_cwd(tmp_path):
    """The server runs in --app-dir; a relative -o (and the profile beside it) still
    means the user's working directory."""
    (tmp_path / "out").mkdir()
    r = subprocess.run([str(APIPROF), "bench", "--app", "hotapp:app", "--app-dir",
                        str(APPS_DIR), "--profile", "trace", "-n", "20", "-c", "2", "-t", "1",
                        "-o", "out/result.json", "/items/3"], capture_output=True, text=True,
                       timeout=90, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["profile"]["file"] == str(tmp_path / "out" / "result.apiprof")
    assert profile_calls(tmp_path / "out" / "result.apiprof", "warm")["hot"] == 20
    assert not (APPS_DIR / "out").exists() and not list(APPS_DIR.glob("*.apiprof"))
    assert "result: out/result.json (profile: out/result.apiprof)" in r.stdout


def test_url_file_headers_per_url_and_one_error_accounting(app, tmp_path):
    """Indented header lines belong to the URL above them (and replace a -H of the same
    name); 4xx/5xx responses, failed and unfinished requests are counted the same way in
    the latency table, the status table and the JSON."""
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "1 POST /form user=ann&pw=x\n"
        "    Content-Type: application/x-www-form-urlencoded\n"
        "    X-Token: abc\n"
        "\n"
        "1 POST /echo {\"n\": 1}\n"
        "1 GET /status/422\n"
    )
    args = ("-n", "30", "-c", "1", "-t", "1", "-H", "X-Token: wrong", "--urls", str(urls),
            "--base", app.url)
    w = warm(load_json(*args))
    per_url = {u["name"]: u for u in w["urls"]}
    assert per_url["POST /form"]["status"] == {"200": 10}
    assert per_url["POST /echo"]["status"] == {"200": 10}  # JSON stays the default type
    assert per_url["GET /status/422"]["status"] == {"422": 10}
    assert w["http_errors"] == 10 and per_url["GET /status/422"]["http_errors"] == 10
    assert w["failed"] == 0 and w["unfinished"] == 0 and w["requests"] == 30

    r = load(*args)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    latency = next(line for line in lines if line.startswith("phase") and "req/s" in line)
    assert latency.split()[-3:] == ["4xx/5xx", "failed", "unfinished"]
    row = next(line.split() for line in lines if line.startswith("warm ") and " all " in line)
    assert row[-3:] == ["10", "0", "0"]
    status = next(line for line in lines if line.startswith("phase") and "status" in line)
    assert status.split()[2:5] == ["status", "failed", "unfinished"]
    row = next(line.split() for line in lines if line.startswith("warm ")
               and "GET /status/422" in line and "422:10" in line)
    assert row[4:6] == ["-", "0"]


def test_url_file_header_line_needs_a_url_above(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("    X-Token: abc\n/ok\n")
    r = load("--urls", str(urls), "--base", "http://127.0.0.1:9")
    assert r.returncode == 2 and f"{urls}:1: a header line belongs below a URL" in r.stderr
    urls.write_text("/ok\n  Host: other\n")
    r = load("--urls", str(urls), "--base", "http://127.0.0.1:9")
    assert r.returncode == 2 and f"{urls}:1: header Host is set by apiprof-load" in r.stderr
