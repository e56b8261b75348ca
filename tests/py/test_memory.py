"""Memory profiling: the allocation hook (full and sampled), its attribution to functions,
lines and threads, the RAW domain without the GIL, `apiprof run --memory`, the views."""

from __future__ import annotations

import ctypes
import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apiprof
import pytest
from apiprof import _core

APIPROF = Path(sys.executable).with_name("apiprof")
SIZE = sys.getsizeof(bytearray(65536))   # object and buffer: the bytes of one bytearray
N = 1000


def make():
    out = []
    for _ in range(N):
        b = bytearray(65536)  # BYTEARRAY_LINE
        out.append(b)
    return out


def make_bytes():
    out = []
    for _ in range(N):
        b = bytes(65536)  # BYTES_LINE
        out.append(b)
    return out


def drop_half(out):
    del out[::2]


def line_no(marker: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.endswith(f"# {marker}"))


def line_row(profile, function: str, line: int) -> dict:
    rows = [r for r in profile.lines() if r["function"] == function and r["line"] == line]
    assert len(rows) == 1, profile.lines()
    return rows[0]


def test_full_mode_counts_bytes_and_live_bytes_of_a_line_exactly():
    p = apiprof.Profiler(memory="full")
    with p:
        keep = make()
        drop_half(keep)
    row = line_row(p.profile, "make", line_no("BYTEARRAY_LINE"))
    # Each bytearray is two blocks (the object, then its buffer), both made on that line.
    assert row["alloc_count"] == 2 * N
    assert row["alloc_bytes"] == N * SIZE
    assert row["live_bytes"] == N // 2 * SIZE
    assert row["peak_bytes"] == N * SIZE
    funcs = {f["qualname"]: f for f in p.functions()}
    assert funcs["make"]["alloc_bytes"] >= N * SIZE   # its lines are the function's
    assert funcs["make"]["live_bytes"] >= N // 2 * SIZE
    del keep


def test_full_mode_frees_after_stop_are_not_seen_and_blocks_from_before_start_are_ignored():
    before = make()
    p = apiprof.Profiler(memory="full")
    with p:
        drop_half(before)   # frees of blocks it never saw change nothing
        keep = make()
    del keep
    row = line_row(p.profile, "make", line_no("BYTEARRAY_LINE"))
    assert row["live_bytes"] == N * SIZE   # alive when it stopped
    assert p.profile.meta["memory"] == "full"
    assert int(p.profile.meta["memory_peak_bytes"]) >= N * SIZE


@pytest.mark.parametrize("seed", range(1, 11))
def test_sampled_estimates_are_within_their_tolerance(seed):
    # Rate 64 KiB, 1,000 blocks of 65,569 bytes: each is sampled with p = 0.632 and counted
    # as 1/p blocks, so the estimates' standard deviation is sqrt(1000 (1/p - 1)) = 24
    # blocks (2.4%). 5 standard deviations: 12%.
    size = sys.getsizeof(bytes(65536))
    p = apiprof.Profiler(memory="sampled", memory_rate=65536, memory_seed=seed)
    with p:
        keep = make_bytes()
    row = line_row(p.profile, "make_bytes", line_no("BYTES_LINE"))
    assert abs(row["alloc_count"] - N) <= 0.12 * N, row
    assert abs(row["alloc_bytes"] - N * size) <= 0.12 * N * size, row
    assert abs(row["live_bytes"] - N * size) <= 0.12 * N * size, row
    assert p.profile.meta["memory_rate"] == "65536"
    del keep


def test_a_seed_gives_the_same_sample_whatever_ran_before():
    # A tracker's run must not inherit another's countdown (another rate, half spent):
    # each start re-seeds every thread, so the same seed samples the same blocks.
    make_bytes()   # warm-up: the same allocations in each run below
    with apiprof.Profiler(memory="sampled"):   # 512 KiB: leaves its countdown behind
        make_bytes()
    rows = []
    for _ in range(2):
        p = apiprof.Profiler(memory="sampled", memory_rate=65536, memory_seed=7)
        with p:
            make_bytes()
        row = line_row(p.profile, "make_bytes", line_no("BYTES_LINE"))
        rows.append((row["alloc_count"], row["alloc_bytes"]))
    assert rows[0] == rows[1]


def test_sampled_estimates_average_out_over_seeds():
    size = sys.getsizeof(bytes(65536))
    counts = []
    for seed in range(100, 120):
        p = apiprof.Profiler(memory="sampled", memory_rate=65536, memory_seed=seed)
        with p:
            make_bytes()
        counts.append(line_row(p.profile, "make_bytes", line_no("BYTES_LINE"))["alloc_bytes"])
    # 20 runs: the mean's standard deviation is 2.4% / sqrt(20) = 0.54%; 5 of them: 2.7%.
    mean = sum(counts) / len(counts)
    assert abs(mean - N * size) <= 0.027 * N * size, counts
    assert len(set(counts)) > 1   # the seeds differ


def small_strings():
    out = []
    for i in range(20000):
        out.append(str(i) * 3)  # SMALL_LINE
    return out


def test_sampled_mode_skips_most_small_blocks():
    full = apiprof.Profiler(memory="full")
    with full:
        keep = small_strings()
    n = line_row(full.profile, "small_strings", line_no("SMALL_LINE"))["alloc_count"]
    del keep
    p = apiprof.Profiler(memory="sampled", memory_seed=5)   # 512 KiB
    with p:
        keep = small_strings()
    row = line_row(p.profile, "small_strings", line_no("SMALL_LINE"))
    # A few MB of blocks of ~55 bytes: a handful of samples, each weighing ~9,500 blocks
    # (1/p at 512 KiB), not a count of every block; the estimate's standard deviation is
    # sqrt(n (1/p - 1)): within 5 of them of the exact count.
    assert row["alloc_count"] >= 5000 and row["alloc_bytes"] > 0
    assert abs(row["alloc_count"] - n) <= 5 * (n * 9533) ** 0.5, (row["alloc_count"], n)
    del keep


def run_threads(profiler, work, prefix: str, n: int) -> None:
    """Under profiler, n threads named prefix-0... run work, and are joined."""
    with profiler:
        threads = [threading.Thread(target=work, name=f"{prefix}-{i}") for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def test_threads_are_charged_in_their_own_trees():
    def work():
        keep = make()
        drop_half(keep)

    p = apiprof.Profiler(memory="full")
    run_threads(p, work, "alloc", 3)
    line = line_no("BYTEARRAY_LINE")
    for i in range(3):
        row = line_row(p.profile.select({"thread": f"alloc-{i}"}), "make", line)
        assert row["alloc_bytes"] == N * SIZE
        assert row["live_bytes"] == 0   # the thread's list died with it
    row = line_row(p.profile, "make", line)
    assert row["alloc_count"] == 3 * 2 * N


def test_raw_domain_without_the_gil_is_recorded_and_its_frees_too():
    # ctypes.CDLL calls release the GIL: PyMem_RawMalloc then runs in a thread without it.
    libc = ctypes.CDLL(None)
    raw_malloc, raw_free = libc.PyMem_RawMalloc, libc.PyMem_RawFree
    raw_malloc.restype, raw_malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    raw_free.restype, raw_free.argtypes = None, [ctypes.c_void_p]
    blocks: list[int] = []

    def work():
        for _ in range(10):
            blocks.append(raw_malloc(1 << 20))
        for b in blocks[::2]:
            raw_free(b)

    p = apiprof.Profiler(memory="full")
    with p:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    for b in blocks[1::2]:
        raw_free(b)
    nodes = [n for tr in json.loads(p.profile.json())["threads"]
             if tr["labels"].get("thread") == "<outside the tracer>" for n in tr["nodes"]]
    frames = json.loads(p.profile.json())["frames"]
    nogil = [n for n in nodes if frames[n["frame"]]["qualname"] == "<without the GIL>"]
    assert len(nogil) == 1
    m = nogil[0]["metrics"] if "metrics" in nogil[0] else nogil[0]
    assert m["alloc_count"] >= 10
    assert m["alloc_bytes"] >= 10 << 20
    assert 5 << 20 <= m["live_bytes"] < (5 << 20) + (1 << 16)


def test_an_extension_allocating_through_pymem_is_charged_to_the_calling_line():
    api = ctypes.pythonapi   # holds the GIL, as a C extension does
    api.PyMem_Malloc.restype, api.PyMem_Malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    api.PyMem_Free.restype, api.PyMem_Free.argtypes = None, [ctypes.c_void_p]

    def allocate():
        return api.PyMem_Malloc(3 << 20)  # PYMEM_LINE

    p = apiprof.Profiler(memory="full")
    with p:
        block = allocate()
    api.PyMem_Free(block)
    row = line_row(p.profile, "test_an_extension_allocating_through_pymem_is_charged_to_the"
                              "_calling_line.<locals>.allocate", line_no("PYMEM_LINE"))
    assert 3 << 20 <= row["alloc_bytes"] < (3 << 20) + 4096
    assert 3 << 20 <= row["live_bytes"] < (3 << 20) + 4096


def test_one_tracker_at_a_time_and_the_tracer_must_run():
    t = _core.Tracer()
    m = _core.MemoryTracker(t, mode="full")
    with pytest.raises(RuntimeError, match="tracer running"):
        m.start()
    with pytest.raises(ValueError, match="full"):
        _core.MemoryTracker(t, mode="every")
    with pytest.raises(ValueError, match="memory_rate"):
        apiprof.Profiler(memory="sampled", memory_rate=0)
    with pytest.raises(ValueError, match="memory must be"):
        apiprof.Profiler(memory="yes")
    p = apiprof.Profiler(memory="full")
    with p:
        q = apiprof.Profiler(memory="full")
        with pytest.raises(RuntimeError):
            q.start()
        assert not q.running
        assert p.memory_snapshot()["live_bytes"] >= 0
    assert apiprof.Profiler().memory_snapshot() is None


def test_views_carry_memory(tmp_path):
    p = apiprof.Profiler(memory="full")
    with p:
        keep = make()
        drop_half(keep)
    path = tmp_path / "mem.apiprof"
    p.save(path)
    prof = _core.load(str(path))
    line = line_no("BYTEARRAY_LINE")
    doc = json.loads(prof.json())
    (row,) = [r for r in doc["lines"] if r["function"] == "make" and r["line"] == line]
    assert (row["alloc_bytes"], row["live_bytes"]) == (N * SIZE, N // 2 * SIZE)
    (fn,) = [f for f in doc["functions"] if f["qualname"] == "make"]
    assert fn["alloc_bytes"] >= N * SIZE and fn["live_bytes"] >= N // 2 * SIZE
    for metric, needle in (("alloc", "alloc"), ("live", "live")):
        r = subprocess.run([str(APIPROF), "report", str(path), "--metric", metric, "--limit", "5"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "make" in r.stdout and needle in r.stdout
    out = tmp_path / "mem.pprof"
    r = subprocess.run([str(APIPROF), "report", str(path), "-f", "pprof", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    raw = gzip.decompress(out.read_bytes())
    for name in (b"alloc_space", b"alloc_objects", b"inuse_space"):
        assert name in raw
    html = tmp_path / "mem.html"
    r = subprocess.run([str(APIPROF), "report", str(path), "-f", "html", "-o", str(html),
                        "--metric", "live"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    assert '"live"' in page and '"memory"' in page
    del keep


LEAKY = """
import time
keep = []
def grow():
    keep.append(bytearray(1 << 20))  # GROW_LINE
print("ready", flush=True)
while True:
    grow()
    time.sleep(0.01)
"""


def test_run_memory_keeps_its_data_when_sigterm_stops_it(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    out = tmp_path / "leaky.apiprof"
    proc = subprocess.Popen([str(APIPROF), "run", "-q", "--memory", "full", "-o", str(out),
                             str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    prof = _core.load(str(out))
    (row,) = [r for r in prof.lines() if r["function"] == "grow" and r["line"] == 5]
    # ~50 MiB after 0.5 s; every one is still alive (the list's own blocks move as it grows).
    assert row["alloc_bytes"] >= row["live_bytes"] >= 10 << 20
    assert prof.meta["memory"] == "full"
    points = json.loads(prof.json())["memory_timeline"]   # its memory over time too
    assert len(points) >= 2 and points[-1]["heap_bytes"] >= 10 << 20


def test_run_memory_option_errors():
    r = subprocess.run([str(APIPROF), "run", "--memory", "all", "-m", "json.tool"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--memory" in r.stderr
    r = subprocess.run([str(APIPROF), "run", "--memory-rate", "12Q", "-m", "json.tool"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--memory-rate" in r.stderr


def _serve(tmp_path, cwd, app, drive, env=None, mode="full", extra=()):
    from conftest import free_port
    from helpers import serve_profiled

    port = free_port()
    out = tmp_path / "server.apiprof"
    serve_profiled([str(APIPROF), "run", "-q", "--memory", mode, *extra, "-o", str(out),
                    "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
                   cwd, env or {}, port, tmp_path / "server.log", drive)
    return out


APPS = Path(__file__).parent / "apps"


def leak_drive(requests: int):
    """The traffic of leakapp: requests POSTs of 2,000 bytes to /ingest (kept) and to
    /echo (not)."""
    def drive(client):
        payload = b"x" * 2000
        for _ in range(requests):
            assert client.post("/ingest", content=payload).status_code == 200
            assert client.post("/echo", content=payload).status_code == 200
    return drive


def storing_line() -> int:
    """The line of leakapp.py that keeps each payload."""
    return next(i for i, t in enumerate((APPS / "leakapp.py").read_text().splitlines(), 1)
                if t.endswith("# STORING_LINE"))


def test_leaking_route_is_the_top_leak_suspect_under_uvicorn(tmp_path):
    out = _serve(tmp_path, APPS, "leakapp:app", leak_drive(300))
    prof = _core.load(str(out))
    suspects = [f for f in prof.findings() if f["kind"] == "leak_suspect"]
    assert [f["route"] for f in suspects] == ["POST /ingest"]   # /echo frees what it makes
    top = suspects[0]
    storing = storing_line()
    assert (top["function"], top["line"], top["count"]) == ("ingest", storing, 300)
    assert top["value"] >= 300 * 2001 and top["unit"] == "bytes"
    # The storing line itself: every kept payload is alive; the echo route's copies are not.
    rows = {(r["function"], r["line"]): r for r in prof.lines()}
    assert rows[("ingest", storing)]["live_bytes"] >= 300 * 2001
    echo_rows = [r for (fn, _), r in rows.items() if fn == "echo"]
    assert echo_rows and all(r["live_bytes"] < 2001 for r in echo_rows)
    doc = json.loads(prof.json())
    assert any(f["kind"] == "leak_suspect" and f["line"] == storing for f in doc["findings"])
    html = tmp_path / "leak.html"
    r = subprocess.run([str(APIPROF), "report", str(out), "-f", "html", "-o", str(html)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    assert '"kind": "leak_suspect"' in page or '"kind":"leak_suspect"' in page
    assert "POST /ingest: " in page


def test_the_shops_growing_render_cache_is_a_leak_suspect(tmp_path):
    from helpers import SHOP_DIR

    def drive(client):
        for i in range(300):
            assert client.get(f"/products/{i % 20 + 1}/render").status_code == 200
            assert client.get(f"/products/{i % 20 + 1}").status_code == 200

    out = _serve(tmp_path, SHOP_DIR, "shop.app:app", drive,
                 env={"SHOP_DB": str(tmp_path / "shop.db")})
    suspects = [f for f in _core.load(str(out)).findings() if f["kind"] == "leak_suspect"]
    assert suspects and suspects[0]["route"] == "GET /products/{product_id}/render"
    assert suspects[0]["count"] == 300
    assert all(f["route"] != "GET /products/{product_id}" for f in suspects)


def test_run_summary_says_what_is_still_alive(tmp_path):
    script = tmp_path / "keep.py"
    script.write_text("keep = []\n"
                      "def f():\n"
                      "    for _ in range(64):\n"
                      "        keep.append(bytearray(1 << 16))\n"
                      "f()\n")
    r = subprocess.run([str(APIPROF), "run", "--memory", "full", "-o", str(tmp_path / "k.apiprof"),
                        str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (note,) = [line for line in r.stderr.splitlines() if line.startswith("memory (full): ")]
    alive = float(note.split()[2])   # "memory (full): 4.1 MiB allocated ... still alive"
    assert note.split()[3] == "MiB" and alive >= 4.0
    r = subprocess.run([str(APIPROF), "run", "--memory", "--memory-rate", "64K", "-o",
                        str(tmp_path / "s.apiprof"), str(script)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "memory (sampled, one sample per 64.0 KiB on average): " in r.stderr
