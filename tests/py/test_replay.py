"""`--replay`: an access log sent again, at its logged times, scaled, or as a mix; per-path
counts, timing and bad lines."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import apiprof
import pytest

APPS_DIR = Path(__file__).resolve().parent / "apps"
LOAD = Path(apiprof.__file__).resolve().parent / "bin" / "apiprof-load"
APIPROF = Path(sys.executable).with_name("apiprof")
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
SPAN_S = 2.0
# (method, path, count): path parameters and queries kept as logged
MIX = [("GET", "/fast", 40), ("GET", "/fast?page=2", 30), ("GET", "/items/7", 20),
       ("POST", "/echo", 10)]
BAD_LINES = ["not a log line", '1.2.3.4 - - [32/Foo/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1',
             '{"method": "GET"}']


def clf(t: datetime.datetime, method: str, path: str) -> str:
    stamp = t.strftime("%d/%b/%Y:%H:%M:%S") + f".{t.microsecond // 1000:03d} +0000"
    return f'127.0.0.1 - - [{stamp}] "{method} {path} HTTP/1.1" 200 5 "-" "client/1.0"'


def jsonl(t: datetime.datetime, method: str, path: str) -> str:
    return json.dumps({"method": method, "path": path, "status": 200,
                       "time": t.timestamp()})


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    """100 requests evenly over 2 s, the mix interleaved, both line formats, bad lines
    among them."""
    seq = [(m, p) for m, p, n in MIX for _ in range(n)]
    seq = [seq[(i * 37) % len(seq)] for i in range(len(seq))]   # interleave (37 coprime 100)
    lines = []
    for i, (m, p) in enumerate(seq):
        t = T0 + datetime.timedelta(seconds=SPAN_S * i / (len(seq) - 1))
        lines.append((clf if i % 2 else jsonl)(t, m, p))
        if i % 30 == 1:
            lines.append(BAD_LINES[(i // 30) % len(BAD_LINES)])
    path = tmp_path_factory.mktemp("replay") / "access.log"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def app(serve_module):
    return serve_module("loadapp:app", cwd=APPS_DIR, health="/fast")


def replay(app, log: Path, *args: str) -> tuple[dict, str]:
    r = subprocess.run([str(LOAD), "--json", "--replay", str(log), "--base", app.url,
                        "-c", "8", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def counts(result: dict) -> Counter:
    urls = result["phases"]["warm"]["urls"]
    return Counter({u["name"]: u["requests"] + u["failed"] for u in urls})


def test_replay_in_time_reproduces_the_counts_and_the_timing(app, log):
    result, err = replay(app, log, "-n", "100")
    assert counts(result) == Counter({f"{m} {p}": n for m, p, n in MIX})
    warm = result["phases"]["warm"]
    assert warm["failed"] == 0
    assert abs(warm["elapsed_s"] - SPAN_S) <= 0.1 * SPAN_S, warm["elapsed_s"]
    rp = result["config"]["replay"]
    assert rp["timed"] is True and rp["lines"] == 104 and rp["used"] == 100
    assert rp["malformed"] == 4 and rp["first_bad"]["line"] == 3
    assert "4 of 104 lines skipped (4 malformed" in err


def test_replay_speed_and_first_n(app, log):
    result, _ = replay(app, log, "--speed", "2", "-n", "50")
    warm = result["phases"]["warm"]
    assert warm["requests"] + warm["failed"] == 50
    # the first 50 requests span about 1 s of the log: half of it at speed 2
    assert abs(warm["elapsed_s"] - 0.5) <= 0.1, warm["elapsed_s"]


def test_replay_as_the_mix_of_a_rate(app, log):
    result, _ = replay(app, log, "-R", "200", "-n", "100")
    assert counts(result) == Counter({f"{m} {p}": n for m, p, n in MIX})
    assert result["config"]["replay"]["timed"] is False


def test_bench_replay_and_sweep_over_the_mix(app, log, tmp_path):
    r = subprocess.run([str(APIPROF), "bench", "--json", "--replay", str(log), "--base", app.url,
                        "-n", "100", "-c", "4"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sum(counts(json.loads(r.stdout)).values()) == 100
    out = tmp_path / "sweep.json"
    r = subprocess.run([str(APIPROF), "bench", "--sweep", "20:40:20", "--replay", str(log),
                        "--base", app.url, "-d", "0.5", "--settle", "0.2", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("lines skipped (4 malformed") == 1, r.stderr   # not once per step
    steps = json.loads(out.read_text())["sweep"]["steps"]
    assert [s["rate"] for s in steps] == [20, 40]
    assert {row["name"] for row in steps[1]["routes"]} == {f"{m} {p}" for m, p, _ in MIX}


def test_replay_errors(app, log, tmp_path):
    untimed = tmp_path / "uvicorn.log"
    untimed.write_text('INFO:     127.0.0.1:5 - "GET /fast HTTP/1.1" 200 OK\n')
    for args, text in (([str(untimed)], "have no time in the log: give -R"),
                       ([str(tmp_path / "missing.log")], "missing.log"),
                       ([str(log), "-d", "1"], "-d and --warmup go with -R")):
        r = subprocess.run([str(LOAD), "--replay", *args, "--base", app.url],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and text in r.stderr, r.stderr
    # a log without times is still a mix
    r = subprocess.run([str(LOAD), "--json", "--replay", str(untimed), "--base", app.url,
                        "-R", "100", "-n", "5"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert counts(json.loads(r.stdout)) == Counter({"GET /fast": 5})
    empty = tmp_path / "bad.log"
    empty.write_text("nothing\nhere\n")
    r = subprocess.run([str(LOAD), "--replay", str(empty), "--base", app.url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no request could be read (2 lines, 2 malformed" in r.stderr


def test_a_log_of_many_paths_is_reported_by_path_pattern(tmp_path):
    """More distinct paths than rows (256): every request is sent as logged, and the rows
    group them by pattern; with --app the pattern's example path finds the route."""
    lines = []
    for i in range(600):
        path = "/" if i % 6 == 0 else f"/api/items/{i}"
        t = T0 + datetime.timedelta(seconds=i / 600)
        lines.append(jsonl(t, "GET", path))
    log = tmp_path / "many.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bench.json"
    r = subprocess.run([str(APIPROF), "bench", "--app", "routes_app:app", "--app-dir",
                        str(APPS_DIR), "--replay", str(log), "-n", "600", "-c", "4",
                        "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "501 distinct methods and paths, reported as 2 rows by path pattern" in r.stderr
    result = json.loads(out.read_text())
    rp = result["load"]["config"]["replay"]
    assert (rp["distinct"], rp["groups"], rp["grouped"]) == (501, 2, True)
    urls = {u["name"]: u for u in result["load"]["phases"]["warm"]["urls"]}
    assert {n: u["requests"] + u["failed"] for n, u in urls.items()} == {
        "GET /": 100, "GET /api/items/{id}": 500}
    assert urls["GET /api/items/{id}"]["paths"] == 500
    assert urls["GET /api/items/{id}"]["status"] == {"200": 500}   # each id sent as logged
    routes = {row["name"]: row for row in result["routes"]["warm"]}
    assert set(routes) == {"GET /", "GET /api/items/{item_id}"}
    assert routes["GET /api/items/{item_id}"]["requests"] == 500
    assert routes["GET /api/items/{item_id}"]["endpoint"].endswith("(get_item)")


def test_text_tables_show_the_most_requested_rows(app, tmp_path):
    """--rows N: the N most requested URLs in each text table, and one line on the rest."""
    lines = [jsonl(T0 + datetime.timedelta(milliseconds=i), "GET", f"/fast?n={i % 12}")
             for i in range(60)] + [jsonl(T0, "GET", "/fast?n=top")] * 10
    log = tmp_path / "twelve.log"
    log.write_text("\n".join(lines) + "\n")
    r = subprocess.run([str(LOAD), "--replay", str(log), "--base", app.url, "-R", "500",
                        "-n", "70", "--rows", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [ln.split()[2] for ln in r.stdout.splitlines()
            if ln.startswith("warm ") and ln.split()[2].startswith("/fast")]
    assert rows[:3] == ["/fast?n=top", "/fast?n=0", "/fast?n=1"], r.stdout
    assert len(rows) == 3 * 3   # three tables: corrected, uncorrected, status
    assert "(the 10 least requested URLs are left out of these tables" in r.stdout
