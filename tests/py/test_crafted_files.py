"""Crafted inputs give one line (exit 2) or a correct, bounded output, never a traceback or
a hang: non-regular and oversized profile and statistics files, names that would drive a
terminal or Graphviz, absurd line numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from profiles import fr, shop_spec, write

APIPROF = Path(sys.executable).with_name("apiprof")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(APIPROF), *args], capture_output=True, text=True,
                          timeout=timeout, errors="replace")


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr[-2000:]
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("fmt", ["text", "json", "html"])
def test_report_refuses_devices_and_fifos(tmp_path, fmt):
    one_line_error(run("report", "/dev/zero", "-f", fmt, timeout=20), "/dev/zero",
                   "not a regular file")
    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    one_line_error(run("report", str(fifo), "-f", fmt, timeout=20), str(fifo),
                   "not a regular file")
    link = tmp_path / "zero.apiprof"
    link.symlink_to("/dev/zero")
    one_line_error(run("report", str(link), "-f", fmt, timeout=20), "not a regular file")


def stats_dir_with(tmp_path: Path, name: str, make) -> Path:
    d = tmp_path / name
    d.mkdir()
    make(d / "apiprof-routes-host-1.bin")
    return d


@pytest.mark.parametrize("case,why", [
    ("zero-link", "a symbolic link"),
    ("fifo", "not a regular file"),
    ("huge", "more than the limit"),
    ("corrupt", "corrupt statistics file"),
    ("dir", "not a regular file"),
])
def test_stats_names_the_bad_entry(tmp_path, case, why):
    def huge(p: Path) -> None:
        with open(p, "wb") as f:
            f.truncate((64 << 20) + 1)
    makers = {"zero-link": lambda p: p.symlink_to("/dev/zero"), "fifo": os.mkfifo,
              "huge": huge, "corrupt": lambda p: p.write_bytes(b"\x07garbage"),
              "dir": lambda p: p.mkdir()}
    d = stats_dir_with(tmp_path, case, makers[case])
    for extra in ([], ["--json"]):
        r = run("stats", "--dir", str(d), *extra, timeout=20)
        one_line_error(r, str(d / "apiprof-routes-host-1.bin"), why)


def test_text_report_neutralises_terminal_escapes_and_newlines(tmp_path):
    evil = "evil\x1b]0;owned\x07\x1b[2J\nFAKE ROW 999\r\x9b31m\u2028x"
    spec = {"meta": {"clock": "wall"},
            "trees": [{"labels": {}, "nodes": [
                ([fr(evil, "/srv/\x1b[31mapp.py\n", 3)], {"self_ns": 5, "calls": 1})]}]}
    src = write(spec, tmp_path / "e.apiprof")
    r = run("report", str(src))
    assert r.returncode == 0, r.stderr
    for bad in ("\x1b", "\x07", "\r", "\x9b", "\u2028"):
        assert bad not in r.stdout
    # One row in the table (the findings above it name the function too, escaped alike).
    table = r.stdout[r.stdout.index("ncalls"):]
    rows = [line for line in table.splitlines() if "evil" in line]
    assert len(rows) == 1 and "\\x1b]0;owned\\x07" in rows[0] and "\\nFAKE ROW 999" in rows[0]
    findings = [line for line in r.stdout[:r.stdout.index("ncalls")].splitlines() if "evil" in line]
    assert findings and all("\\x1b]0;owned\\x07" in line for line in findings)
    assert not any(line.startswith("FAKE ROW") for line in r.stdout.splitlines())


def test_line_report_with_an_absurd_line_number_is_bounded(tmp_path):
    code = tmp_path / "app.py"
    code.write_text("def f():\n    return 1\n")
    spec = {"meta": {"clock": "wall", "tool": "apiprof lines"},
            "trees": [{"labels": {}, "nodes": [
                ([fr("f", str(code), 1)], {"self_ns": 10, "calls": 1}),
                ([fr("f", str(code), 1), fr("f", str(code), 1, 0xFFFFFFFF)],
                 {"self_ns": 7, "calls": 1}),
                ([fr("f", str(code), 1), fr("f", str(code), 1, 2)], {"self_ns": 3, "calls": 1}),
                ([fr("g", "/nonexistent/x.py", 5)], {"self_ns": 1, "calls": 1}),
                ([fr("g", "/nonexistent/x.py", 5), fr("g", "/nonexistent/x.py", 5, 0xFFFFFFFE)],
                 {"self_ns": 1, "calls": 1})]}]}
    src = write(spec, tmp_path / "l.apiprof")
    r = run("report", str(src), timeout=30)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) < 10_000
    assert "4294967295" in r.stdout and "4294967294" in r.stdout
    assert "return 1" in r.stdout


def test_dot_labels_are_shortened_and_graphviz_takes_them(tmp_path):
    long_name = "x" * (1 << 20)
    spec = {"meta": {"clock": "wall"},
            "trees": [{"labels": {}, "nodes": [
                ([fr(long_name + "\u00e9", "/srv/" + "d" * 100_000 + ".py", 1)],
                 {"self_ns": 5, "calls": 1}),
                ([fr("ok\"\\\x01", "/srv/a.py", 2)], {"self_ns": 5, "calls": 1})]}]}
    src = write(spec, tmp_path / "d.apiprof")
    r = run("report", str(src), "-f", "dot")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) < 5_000
    assert 'label="' + "x" * 150 in r.stdout and "x" * 300 not in r.stdout
    assert 'ok\\"\\\\ ' in r.stdout
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's dot is not installed: run `make system-deps`", pytrace=False)
    g = subprocess.run(["dot", "-Tsvg"], input=r.stdout, capture_output=True, text=True)
    assert g.returncode == 0 and "<svg" in g.stdout, g.stderr[-500:]


def test_shop_profile_still_reads(tmp_path):
    src = write(shop_spec(), tmp_path / "s.apiprof")
    assert run("report", str(src)).returncode == 0


def test_invalid_utf8_names_and_metadata_read_as_replacement_characters(tmp_path,
                                                                          monkeypatch):
    import json

    import profiles

    def raw_text(s: str) -> bytes:
        b = s.encode("utf-8", "surrogateescape")
        return profiles._varint(len(b)) + b
    monkeypatch.setattr(profiles, "_text", raw_text)
    bad = b"\xff\xfe<\xc3".decode("utf-8", "surrogateescape")
    spec = {"meta": {"clock": "wall", "argv": bad, bad: "v"},
            "trees": [{"labels": {"route": "GET /" + bad}, "nodes": [
                ([fr("f" + bad, "/x" + bad + ".py", 1)], {"self_ns": 5, "calls": 1})]}]}
    src = write(spec, tmp_path / "u.apiprof")
    for fmt in ("text", "json", "pstats", "html", "svg", "dot", "speedscope", "pprof",
                "collapsed", "callgrind"):
        out = tmp_path / f"u.{fmt}"
        r = run("report", str(src), "-f", fmt, "-o", str(out))
        assert r.returncode == 0 and "Traceback" not in r.stderr, (fmt, r.stderr)
        if fmt in ("text", "json", "html", "svg", "dot", "speedscope", "collapsed"):
            out.read_bytes().decode("utf-8")   # valid UTF-8 whatever the profile held
    doc = json.loads((tmp_path / "u.json").read_text())
    assert doc["meta"]["argv"] == "\ufffd\ufffd<\ufffd"
    assert "\ufffd\ufffd<\ufffd" in (tmp_path / "u.text").read_text()


def test_stats_reader_on_mutated_files(tmp_path):
    import random

    from apiprof import _core
    from apiprof.asgi.stats_files import read_dir

    valid = _core.RouteTable(8).encode()
    rng = random.Random(5)
    path = tmp_path / "apiprof-routes-h-1.bin"
    outcomes = {"ok": 0, "named": 0}
    for i in range(600):
        data = bytearray(valid + bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        for _ in range(rng.randrange(3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data[:rng.randrange(len(data) + 1)] if i % 3 == 0 else data))
        try:
            merged, files = read_dir(tmp_path)
        except ValueError as e:
            assert str(path) in str(e) and "\n" not in str(e), e
            outcomes["named"] += 1
        else:
            assert files == [path] and merged.snapshot() == []
            outcomes["ok"] += 1
    assert outcomes["named"] > 300 and outcomes["ok"] > 0


def _limit_address_space(limit: int) -> Callable[[], None] | None:
    """A preexec_fn capping the child's address space at ``limit`` bytes, so that a
    regression fails here instead of exhausting the machine; None under ASan (its shadow
    memory reserves terabytes of address space up front)."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return None

    def limit_it() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit_it


def test_stack_views_of_a_very_deep_tree_are_cut_and_keep_every_value(tmp_path):
    """A recursion 150,000 frames deep: the stack views (collapsed, speedscope, pprof)
    write each node's whole path, which would be ~10^10 frames; they cut paths at 1,024
    frames, and the frame there carries everything below it, so the totals stay."""
    import gzip
    import json

    from profiles import write_chain
    depth, limit = 150_000, 1024
    src = write_chain(tmp_path / "deep.apiprof", depth)
    outs = {}
    for fmt in ("collapsed", "speedscope", "pprof"):
        out = tmp_path / f"deep.{fmt}"
        r = subprocess.run([str(APIPROF), "report", str(src), "-f", fmt, "-o", str(out)],
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=_limit_address_space(3 << 30))
        assert r.returncode == 0, (fmt, r.stderr[-2000:])
        outs[fmt] = out.read_bytes()
    lines = outs["collapsed"].decode().splitlines()
    assert len(lines) == limit
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == depth * 10
    assert lines[-1].count(";") == limit - 1 and lines[-1].endswith(f" {(depth - limit + 1) * 10}")
    doc = json.loads(outs["speedscope"])
    prof = doc["profiles"][0]
    assert max(len(s) for s in prof["samples"]) == limit == len(prof["samples"])
    assert sum(prof["weights"]) == prof["endValue"] == depth * 10
    assert len(gzip.decompress(outs["pprof"])) < 2 * limit * limit   # uncut: ~10^10 bytes


def test_stats_of_a_file_with_30000_routes_is_bounded_and_exact(tmp_path):
    """A valid worker file of 30,000 routes (4 MB) took about 1.3 GB to merge (41 KB of
    histogram per key): the merge keeps 2,048 keys, counts the rest in the overflow
    entries, and every request stays counted."""
    import json

    from apiprof import _core
    table = _core.RouteTable(30_000)

    async def send(message: dict) -> None:
        pass
    for i in range(30_000):
        scope = {"type": "http", "method": "GET", "path": "/"}
        request = table.request(scope, send)
        scope["route"] = type("Route", (), {"path_format": f"/r{i}/" + "x" * 80})()
        request.finish()
    d = tmp_path / "stats"
    d.mkdir()
    (d / "apiprof-routes-host-1.bin").write_bytes(table.encode())
    r = subprocess.run([str(APIPROF), "stats", "--dir", str(d), "--json"], capture_output=True,
                       text=True, timeout=60, preexec_fn=_limit_address_space(1 << 30))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)["routes"]
    assert sum(row["count"] for row in rows) == 30_000
    overflow = [row for row in rows if row["route"] == "<overflow>"]
    assert len(rows) == 2048 + 1 and overflow[0]["count"] == 30_000 - 2048
