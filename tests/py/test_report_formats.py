"""`apiprof report`: every format, read back by its real consumer, with exact totals."""

from __future__ import annotations

import gzip
import json
import marshal
import os
import pstats
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from profiles import SHOP_ROUTE_ITEMS_WALL, SHOP_TOTALS, shop_spec, write

APIPROF = Path(sys.executable).with_name("apiprof")
# The consumers run without the sanitizer runtime `make sanitize` preloads.
CONSUMER_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
SCHEMA = Path(__file__).parent.parent / "data" / "speedscope-file-format-schema.json"


def consume(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a consumer of our output (go, dot, callgrind_annotate)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, env=CONSUMER_ENV, **kw)


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(APIPROF), "report", *args], capture_output=True, text=True,
                       timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shop")
    return write(shop_spec(d / "tpl.py"), d / "shop.apiprof")


def collapsed_total(text: str) -> int:
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines())


def test_format_follows_extension(shop, tmp_path):
    expect = {"r.html": b"<!DOCTYPE html>", "f.svg": b"<?xml", "g.dot": b"digraph",
              "p.speedscope.json": b'{"$schema"', "p.pb.gz": b"\x1f\x8b",
              "s.collapsed": b"<module>", "callgrind.out.1": b"# callgrind format",
              "t.trace.json": b'{"displayTimeUnit"', "t.txt": b"apiprof: ",
              "p.json": b'{"format": "apiprof"', "p.pstats": b"{"}
    for name, head in expect.items():
        r = run(str(shop), "-o", str(tmp_path / name))
        assert (tmp_path / name).read_bytes().startswith(head), name
        # Every format names its output and what it is; HTML says how to open it.
        fmt = {"r.html": "html", "f.svg": "svg", "g.dot": "dot", "p.speedscope.json": "speedscope",
               "p.pb.gz": "pprof", "s.collapsed": "collapsed", "callgrind.out.1": "callgrind",
               "t.trace.json": "chrome", "t.txt": "text", "p.json": "json",
               "p.pstats": "pstats"}[name]
        line = f"apiprof report: wrote the {fmt} report to {tmp_path / name}"
        if fmt == "html":
            line += f"; open file://{tmp_path / name} in a browser"
        assert r.stderr.strip() == line
    r = run(str(shop), "-o", str(tmp_path / "x.unknownext"), ok=False)
    assert r.returncode == 2 and "pass --format" in r.stderr


def test_text_to_stdout_by_default(shop):
    out = run(str(shop)).stdout
    assert out.startswith("apiprof: ") and "cumtime" in out
    assert re.search(r"^\s*14/2\s.*fib", out, re.M), out


def test_pprof_read_by_go_tool_pprof(shop, tmp_path):
    out = tmp_path / "p.pb.gz"
    run(str(shop), "-o", str(out))
    gzip.decompress(out.read_bytes())   # really gzip
    for metric, total in (("wall", SHOP_TOTALS["wall"]), ("cpu", SHOP_TOTALS["cpu"]),
                          ("await", SHOP_TOTALS["await"])):
        r = consume(["go", "tool", "pprof", "-top", "-unit=ns", f"-sample_index={metric}",
                            str(out)])
        assert r.returncode == 0, r.stderr
        assert f"of {total}ns total" in r.stdout, r.stdout
    r = consume(["go", "tool", "pprof", "-raw", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert "calls/count wall/nanoseconds[dflt] cpu/nanoseconds await/nanoseconds " \
           "alloc_space/bytes" in r.stdout
    assert "route:[GET /items/{id}]" in r.stdout and "thread:[MainThread]" in r.stdout
    top = consume(["go", "tool", "pprof", "-top", "-unit=ns", str(out)]).stdout
    assert re.search(r"^\s+88000ns\s+51\.01%.*query$", top, re.M), top
    bytes_top = consume(["go", "tool", "pprof", "-top", "-sample_index=alloc_space",
                                str(out)]).stdout
    assert "of 5kB total" in bytes_top, bytes_top


def test_callgrind_read_by_callgrind_annotate(shop, tmp_path):
    out = tmp_path / "callgrind.out.shop"
    run(str(shop), "-o", str(out))
    r = consume(["callgrind_annotate", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^{SHOP_TOTALS['wall']:,} \(100\.0%\)\s+PROGRAM TOTALS", r.stdout, re.M)
    assert re.search(r"^88,000 \(51\.01%\)\s+/srv/shop/db.py:query$", r.stdout, re.M)
    # Per-line costs of the line-level frames, annotated on the real source file.
    assert re.search(r"^30,000 \(17\.39%\)\s+out = \[r for r in rows\]", r.stdout, re.M)
    cpu = tmp_path / "callgrind.out.cpu"
    run(str(shop), "-o", str(cpu), "--metric", "cpu")
    r = consume(["callgrind_annotate", str(cpu)])
    assert re.search(rf"^{SHOP_TOTALS['cpu']:,} \(100\.0%\)\s+PROGRAM TOTALS", r.stdout, re.M)


def test_pstats_loaded_by_pstats(shop, tmp_path):
    out = tmp_path / "p.pstats"
    run(str(shop), "-o", str(out))
    st = pstats.Stats(str(out))
    assert st.total_tt == pytest.approx(SHOP_TOTALS["wall"] / 1e9)
    (cc, nc, tt, ct, callers), = [v for k, v in st.stats.items() if k[2] == "query"]
    assert (cc, nc) == (42, 42) and tt == pytest.approx(88e-6)
    assert {k[2] for k in callers} == {"list_items", "get_item"}
    assert isinstance(marshal.loads(out.read_bytes()), dict)


def test_dot_and_svg_through_graphviz(shop, tmp_path):
    dot = run(str(shop), "-f", "dot").stdout
    assert dot.startswith("digraph apiprof {")
    # Edge list_items -> query: 80,000 of 172,500 ns, 40 calls.
    assert re.search(r'label="46\.4%\\n40\xd7"', dot), dot
    assert 'label="query\\ndb.py:5\\ntotal 51.0% self 51.0%\\n42 calls"' in dot
    # Shading: query (51% self) is darker than Server.run (1.4% self).
    assert 'fillcolor="#ff9898"' in dot
    svg = tmp_path / "g.svg"
    run(str(shop), "-f", "dot", "-o", str(svg))
    text = svg.read_text()
    assert "<svg" in text and "list_items" in text and "46.4%" in text
    # A high threshold prunes the small functions.
    pruned = run(str(shop), "-f", "dot", "--min-percent", "20").stdout
    assert "fib" not in pruned and "list.append" not in pruned and "query" in pruned
    r = consume(["dot", "-Tsvg"], input=pruned)
    assert r.returncode == 0


def test_speedscope_valid_against_schema(shop):
    doc = json.loads(run(str(shop), "-f", "speedscope").stdout)
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert len(doc["profiles"]) == 2
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == SHOP_TOTALS["wall"]
    for p in doc["profiles"]:
        assert len(p["samples"]) == len(p["weights"])
        assert p["endValue"] == sum(p["weights"])
        assert all(0 <= i < len(doc["shared"]["frames"]) for s in p["samples"] for i in s)
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert "render:3" in names and "<module>" in names
    mem = json.loads(run(str(shop), "-f", "speedscope", "--metric", "memory").stdout)
    jsonschema.validate(mem, json.loads(SCHEMA.read_text()))
    assert mem["profiles"][0]["unit"] == "bytes"
    assert sum(sum(p["weights"]) for p in mem["profiles"]) == SHOP_TOTALS["memory"]


def test_collapsed_metrics_and_filters(shop):
    text = run(str(shop), "-f", "collapsed").stdout
    assert collapsed_total(text) == SHOP_TOTALS["wall"]
    # Same path in both trees is summed once merged: <module>;Server.run is 2000 + 500.
    assert "<module> (/srv/shop/app.py:1);Server.run (/srv/shop/app.py:10) 2500\n" in text
    for metric in ("cpu", "await", "memory"):
        assert collapsed_total(run(str(shop), "-f", "collapsed", "--metric", metric).stdout) \
            == SHOP_TOTALS[metric]
    routed = run(str(shop), "-f", "collapsed", "--route", "GET /items").stdout
    assert collapsed_total(routed) == SHOP_ROUTE_ITEMS_WALL
    assert "get_item" not in routed
    threaded = run(str(shop), "-f", "collapsed", "--thread", "worker-1", "--task", "Task-2").stdout
    assert collapsed_total(threaded) == SHOP_TOTALS["wall"] - SHOP_ROUTE_ITEMS_WALL


def test_bad_options_exit_2(shop):
    for args, msg in ((["--metric", "joules"], "unknown metric 'joules'"),
                      (["--metric", "samples"], "the profile has no samples data"),
                      (["--route", "GET /nope"], "no part of the profile has route=GET /nope"),
                      (["--min-percent", "150"], "--min-percent must be between 0 and 100")):
        r = run(str(shop), "-f", "collapsed", *args, ok=False)
        assert r.returncode == 2, args
        assert r.stderr.count("\n") == 1 and msg in r.stderr and "Traceback" not in r.stderr


def test_chrome_trace_from_the_event_ring(shop, tmp_path):
    doc = json.loads(run(str(shop), "-f", "chrome").stdout)
    events = doc["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == 5
    # a track per thread, named by it; each span says its route and task, and what its
    # own time was (running here: no wait)
    assert {e["args"]["name"] for e in events if e["ph"] == "M"} == {"MainThread", "worker-1"}
    assert {(e["args"]["route"], e["args"]["task"]) for e in spans} == {
        ("GET /items", "Task-1"), ("GET /items/{id}", "Task-2")}
    assert {e["cat"] for e in spans} <= {"running", "database", "network", "file", "sleep"}
    run_ = next(e for e in spans if e["name"] == "Server.run")
    query = next(e for e in spans if e["name"] == "query")
    assert run_["ts"] == 0 and run_["dur"] == 200.0 and query["ts"] == 20.0
    # Nesting holds on each thread: a span starting inside another ends inside it.
    assert query["ts"] + query["dur"] <= run_["ts"] + run_["dur"]
    # No timeline recorded: say so, exit 2, write nothing.
    spec = shop_spec()
    del spec["events"]
    plain = write(spec, tmp_path / "plain.apiprof")
    out = tmp_path / "t.trace.json"
    r = run(str(plain), "-o", str(out), ok=False)
    assert r.returncode == 2 and "recorded no event timeline" in r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()


def test_bad_input_files_exit_2(shop, tmp_path):
    data = shop.read_bytes()
    cases = {"missing": None, "empty": b"", "garbage": b"hello, not a profile\n" * 3,
             "header-only": data[:16], "bad-version": data[:8] + b"\x63\0\0\0" + data[12:]}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        for fmt in ("html", "pprof", "text"):
            r = run(str(path), "-f", fmt, "-o", str(tmp_path / f"{name}.{fmt}.out"), ok=False)
            assert r.returncode == 2, (name, fmt, r.stderr)
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            assert not (tmp_path / f"{name}.{fmt}.out").exists()
    # Cut short after its first chunks: what it held is reported, with a warning.
    cut = tmp_path / "cut.apiprof"
    cut.write_bytes(data[: len(data) - 40])
    r = run(str(cut), "-f", "text")
    assert "was cut short" in r.stderr


def test_write_report_api_errors(shop, tmp_path):
    from apiprof import _core
    with pytest.raises(ValueError, match="unknown format 'gif'"):
        _core.write_report(str(shop), "gif", None, None)
    with pytest.raises(TypeError):
        _core.write_report(str(shop), "svg", None, {"metric": 3})
    with pytest.raises(OSError, match="cannot write"):
        _core.write_report(str(shop), "svg", str(tmp_path / "no" / "dir.svg"), None)
    assert _core.write_report(str(shop), "json", str(tmp_path / "x.json"), {}) is False


def test_svg_flame_graph_is_well_formed(shop):
    import xml.etree.ElementTree as ET
    svg = run(str(shop), "-f", "svg", "--title", "Shop <flame>").stdout
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    frames = root.find(f"{ns}g[@id='frames']")
    titles = [g.find(f"{ns}title").text for g in frames]
    assert root.find(f"{ns}text[@id='title']").text.startswith("Shop <flame>")
    assert any(t.startswith("query (80 us, 46.38%, 40 calls)") for t in titles), titles
    assert titles[0] == "all (172 us, 100.00%)"
    assert int(root.get("data-total")) == SHOP_TOTALS["wall"]


FILTERS = (["--thread", "nope"], ["--task", "nope"], ["--route", "GET /nope"],
           ["--metric", "nope"], ["--metric", "samples"])


@pytest.mark.parametrize("fmt", ["text", "json", "pstats", "html", "svg", "collapsed", "dot",
                                 "speedscope", "callgrind"])
def test_every_format_refuses_a_filter_that_matches_nothing(shop, tmp_path, fmt):
    for args in FILTERS:
        r = run(str(shop), "-f", fmt, *args, "-o", str(tmp_path / f"out.{fmt}"), ok=False)
        assert r.returncode == 2, (fmt, args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("apiprof report: "), r.stderr
        if args[0] == "--metric":
            assert (r.stderr.split(": ", 1)[1]
                    == ("unknown metric 'nope' (wall, cpu, await, memory or alloc, live, samples)\n"
                        if args[1] == "nope" else "the profile has no samples data\n")), r.stderr
        else:
            assert f"no part of the profile has {args[0][2:]}={args[1]} (it has: " in r.stderr
        assert not (tmp_path / f"out.{fmt}").exists()


def test_text_applies_thread_and_metric_as_the_other_formats(shop, tmp_path):
    out = run(str(shop), "--thread", "MainThread", "--limit", "0").stdout
    assert "list_items" in out and "get_item" not in out and "fib" not in out, out
    # --metric: the table's self and total are that metric, in its unit.
    out = run(str(shop), "--metric", "memory", "--sort", "tottime").stdout
    assert "metric: memory" in out.splitlines()[0]
    assert re.search(r"^\s*42\s+4096B\s+98B\s+4096B\s.*db.py:5\(query\)$", out, re.M), out
    out = run(str(shop), "--metric", "cpu", "--thread", "worker-1").stdout
    assert re.search(r"^\s*2\s+4.0us\s+2.0us\s+4.0us\s.*\(get_item\)$", out, re.M), out
    # pstats with --metric cpu holds CPU seconds, as the function table of cpu.
    run(str(shop), "-f", "pstats", "--metric", "cpu", "-o", str(tmp_path / "c.pstats"))
    import pstats
    stats = pstats.Stats(str(tmp_path / "c.pstats")).stats  # type: ignore[attr-defined]
    tt = {k[2]: v[2] for k, v in stats.items()}
    assert tt["list_items"] == pytest.approx(9_000 / 1e9) and tt["get_item"] == pytest.approx(4e-6)
