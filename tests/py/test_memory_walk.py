"""Memory without the function tracer (``Profiler(calls=False)``, ``apiprof run --memory
--no-calls``): each tracked allocation is charged to the call path walked from the thread's
running frames, so exact counts, call paths, lines, threads, routes and leak suspects hold
with no call traced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import apiprof
import pytest
from apiprof import _core
from test_memory import (
    APPS,
    SIZE,
    N,
    _serve,
    drop_half,
    leak_drive,
    line_no,
    line_row,
    make,
    make_bytes,
    run_threads,
    storing_line,
)

APIPROF = Path(sys.executable).with_name("apiprof")


def outer():
    return middle()


def middle():
    return make()


def paths(profile, tmp_path):
    """Collapsed stacks of the profile's bytes allocated (function names only) -> bytes."""
    out = tmp_path / "stacks.txt"
    _core.write_report(profile, "collapsed", str(out), {"metric": "memory"})
    stacks = {}
    for line in out.read_text().splitlines():
        stack, value = line.rsplit(" ", 1)
        names = tuple(part.split(" (", 1)[0] for part in stack.split(";"))
        stacks[names] = stacks.get(names, 0) + int(value)
    return stacks


def test_full_mode_without_calls_counts_a_line_exactly_under_its_call_path(tmp_path):
    p = apiprof.Profiler(memory="full", calls=False)
    with p:
        keep = outer()
        drop_half(keep)
    row = line_row(p.profile, "make", line_no("BYTEARRAY_LINE"))
    assert row["alloc_count"] == 2 * N
    assert row["alloc_bytes"] == N * SIZE
    assert row["live_bytes"] == N // 2 * SIZE
    assert row["time_ns"] == 0 and row["hits"] == 0   # nothing was timed
    funcs = {f["qualname"]: f for f in p.functions()}
    assert funcs["make"]["calls"] == 0 and funcs["make"]["total_ns"] == 0
    assert p.profile.meta["calls"] == "off"
    # The block's path: outer, middle, make, then make's line; as with the tracer, the
    # frames running when it started (this test and pytest's) are not in it.
    line = f"make:{line_no('BYTEARRAY_LINE')}"
    walked = [s for s in paths(p.profile, tmp_path) if s[-1] == line]
    assert walked == [("outer", "middle", "make", line)], paths(p.profile, tmp_path)
    assert sum(v for s, v in paths(p.profile, tmp_path).items() if s[-1] == line) == N * SIZE
    del keep


@pytest.mark.parametrize("seed", range(1, 6))
def test_sampled_without_calls_estimates_are_within_their_tolerance(seed):
    # As test_memory's: p = 0.632 per block at rate 64 KiB; 5 standard deviations: 12%.
    size = sys.getsizeof(bytes(65536))
    p = apiprof.Profiler(memory="sampled", memory_rate=65536, memory_seed=seed, calls=False)
    with p:
        keep = make_bytes()
    row = line_row(p.profile, "make_bytes", line_no("BYTES_LINE"))
    assert abs(row["alloc_count"] - N) <= 0.12 * N, row
    assert abs(row["alloc_bytes"] - N * size) <= 0.12 * N * size, row
    assert abs(row["live_bytes"] - N * size) <= 0.12 * N * size, row
    del keep


def test_excluded_modules_leave_the_path_and_threads_get_their_own_trees(tmp_path):
    def work():
        keep = outer()
        drop_half(keep)

    p = apiprof.Profiler(memory="full", calls=False, exclude="threading")
    run_threads(p, work, "walk", 2)
    line = line_no("BYTEARRAY_LINE")
    for i in range(2):
        sub = p.profile.select({"thread": f"walk-{i}"})
        row = line_row(sub, "make", line)
        assert row["alloc_bytes"] == N * SIZE and row["live_bytes"] == 0
        # threading's bootstrap frames are excluded: the path starts at work.
        stacks = [s for s in paths(sub, tmp_path) if s[-1] == f"make:{line}"]
        assert stacks and all(s[0].endswith("<locals>.work") and
                              s[1:4] == ("outer", "middle", "make") for s in stacks), stacks


def test_a_stack_deeper_than_the_walk_keeps_its_innermost_frames(tmp_path):
    def deep(n):
        return deep(n - 1) if n else make()

    p = apiprof.Profiler(memory="full", calls=False)
    with p:
        keep = deep(400)
    row = line_row(p.profile, "make", line_no("BYTEARRAY_LINE"))
    assert row["alloc_bytes"] == N * SIZE   # the line and its bytes are exact
    line = f"make:{line_no('BYTEARRAY_LINE')}"
    stacks = [s for s in paths(p.profile, tmp_path) if s[-1] == line]
    # 256 frames walked, innermost first: make and 255 calls of deep, under the root.
    assert stacks and all(len(s) == 257 and s[-2] == "make" and
                          all(f.endswith("<locals>.deep") for f in s[:255]) for s in stacks), \
        [len(s) for s in stacks]
    del keep


def test_calls_false_options_that_need_calls_are_refused():
    with pytest.raises(ValueError, match="nothing without memory"):
        apiprof.Profiler(calls=False)
    with pytest.raises(ValueError, match="timeline, cpu"):
        apiprof.Profiler(memory="full", calls=False, timeline=10, cpu=True)
    with pytest.raises(ValueError, match="calls=False"):
        _core.Tracer(calls=False, stalls=1000)
    for extra, word in ((["--cpu"], "--cpu"), (["--timeline"], "--timeline"),
                        (["--queries"], "--queries")):
        r = subprocess.run([str(APIPROF), "run", "--memory", "--no-calls", *extra, "-m",
                            "json.tool"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and word in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([str(APIPROF), "run", "--no-calls", "-m", "json.tool"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--no-calls needs --memory" in r.stderr


def test_run_no_calls_summary_and_report_show_bytes(tmp_path):
    script = tmp_path / "keep.py"
    script.write_text("def grow(n):\n    keep = []\n    for _ in range(n):\n"
                      "        keep.append(bytearray(4096))\n    return keep\n\n"
                      "kept = grow(2000)\n")
    out = tmp_path / "keep.apiprof"
    r = subprocess.run([str(APIPROF), "run", "--memory", "full", "--no-calls", "-o", str(out),
                        str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(calls not traced)" in r.stderr and "ncalls" not in r.stderr, r.stderr
    row = next(line for line in r.stderr.splitlines() if line.endswith("(grow)"))
    assert int(row.split()[0].rstrip("B")) >= 2000 * 4096   # self bytes, not time
    r = subprocess.run([str(APIPROF), "report", str(out)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "metric: memory" in r.stdout, r.stdout + r.stderr
    # A run too short for one sample: the summary and the report say so, no traceback.
    tiny = tmp_path / "tiny.py"
    tiny.write_text("x = 1\n")
    r = subprocess.run([str(APIPROF), "run", "--memory", "sampled", "--memory-rate", "1G",
                        "--no-calls", "-o", str(out), str(tiny)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "no allocation was tracked" in r.stderr, r.stderr
    r = subprocess.run([str(APIPROF), "report", str(out)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_leaking_route_is_the_top_leak_suspect_without_calls(tmp_path):
    for mode in ("full", "sampled"):
        out = _serve(tmp_path, APPS, "leakapp:app", leak_drive(200), mode=mode,
                     extra=["--no-calls"] + (["--memory-rate", "1K"] if mode == "sampled" else []))
        prof = _core.load(str(out))
        suspects = [f for f in prof.findings() if f["kind"] == "leak_suspect"]
        assert [f["route"] for f in suspects] == ["POST /ingest"], (mode, suspects)
        storing = storing_line()
        top = suspects[0]
        assert (top["function"], top["line"], top["count"]) == ("ingest", storing, 200), top
        rows = {(r["function"], r["line"]): r for r in prof.lines()}
        assert rows[("ingest", storing)]["live_bytes"] >= (200 if mode == "full" else 100) * 2001
        # The text report's unreleased objects: what requests made, start-up apart.
        r = subprocess.run([str(APIPROF), "report", str(out)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        table = r.stdout.split("unreleased objects (made by requests", 1)[1].split("\n\n")[0]
        first = table.splitlines()[2].split()
        assert first[0] == "bytes" and f"(leakapp.py:{storing}):" in table.splitlines()[2], table
        assert "_compile_bytecode" not in table   # start-up's objects are apart
