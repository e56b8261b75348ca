"""Instruction counts (valgrind's callgrind) of profiling overhead: apiprof beside its peers.

    python bench/instructions.py [--groups trace,lines,asgi,queries,memory] [--quick] [--json FILE]

Wall-clock overheads on a shared machine move by tens of percent from run to run; counted
instructions repeat to a few hundredths of a percent. Every case runs in a child process
under ``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=apext_bench_region``:
the child does its imports and set-up, starts the tool, runs the workload once (warm-up:
code records, tree nodes, specialisation), then runs it once more through
``apiprof._core._bench_region``, a C function that only calls it, so that only that region
is counted; then it stops the tool. Start-up, start and stop are thus outside the count,
and the constant cost of the marker's call cancels in the differences. (A build without
the marker, measured for a "before" column, is marked by a call of libc's qsort through
ctypes whose single comparison is the workload, ``--toggle-collect=qsort*``; that does not
work with every C library's qsort.) A
collection right before the region resets the garbage collector's counters, so that its
collections fall at the same points whatever was imported before.

Groups and cases:
- trace: function tracing of fib, Hanoi, a template-like workload, pydantic validation and
  a FastAPI request loop: baseline, apiprof (default options), apiprof builtins=False,
  "hooks-only" (apiprof with every function filtered out: the interpreter's price of
  delivering events), apiprof without stall detection ("no-stalls"), with lock timing
  ("+locks") and with the CPU split and GIL waits ("cpu"), cProfile (profiling.tracing on
  3.15+), yappi.
- lines: line profiling of a tight loop and a realistic function: apiprof.LineProfiler
  vs line_profiler.
- asgi: a trivial FastAPI route called in-process (no server) through no middleware,
  apiprof's ProfilerMiddleware (statistics only; "nowatch": without the stall watchdog),
  a hand-written pure-ASGI middleware that times each call into a dict, and
  fastapi-profiler's middleware (statistics, no per-request profile). Reported per
  request; beside it, the system calls per request of each variant, counted with strace
  (run natively, N and 2N requests subtracted).
- memory: allocation-heavy workloads (bench/memory_overhead.py's small objects, JSON
  decode, pydantic validation, and the FastAPI request loop): baseline, tracemalloc with 1
  and with 64 frames, apiprof memory="full" and "sampled" with the tracer, and the same
  with calls=False (no tracer: ``apiprof run --memory --no-calls``); the extras as a share
  of the baseline and apiprof full's as a share of tracemalloc(64)'s.
- queries: query capture (``Profiler(queries=True)``, ``apiprof run --queries``) on 20
  requests of a recent-orders route with an N+1 (a SQLite connection each, 41 statements):
  baseline, apiprof, apiprof +queries; the capture's instructions as a share of the
  traced request.

Reported: instructions of the region in millions, extra over the baseline, and apiprof's
extra as a share of the peer's. Peers (yappi, line_profiler, fastapi-profiler) are
installed into the running interpreter's environment with pip when missing; they are
benchmark peers, not dependencies of apiprof, and one that does not install is left out
and named. PYTHONHASHSEED is fixed so that runs repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime
import gc
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _peers import ensure_peers

BENCH = Path(__file__).resolve().parent
PEERS = {"yappi": "yappi", "line_profiler": "line_profiler", "fastapi_profiler": "fastapi-profiler"}

# ---- the marked region ------------------------------------------------------------------

_CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def region(fn: Callable[[], Any]) -> None:
    """Runs fn once inside the extension's ``apext_bench_region`` C function (callgrind
    counts only inside it); with a build that lacks it (an older one measured for a
    "before" column), inside libc's qsort instead (``qsort*``: C libraries whose qsort
    reaches the comparator through another qsort* function toggle twice and count
    nothing, which count() detects)."""
    try:
        from apiprof import _core
        marker = _core._bench_region
    except (ImportError, AttributeError):
        marker = None
    if marker is not None:
        marker(fn)
        return
    done: list[int] = []

    def compare(a: int, b: int) -> int:
        if not done:
            done.append(1)
            fn()
        return 0

    arr = (ctypes.c_int * 2)(1, 2)
    ctypes.CDLL(None).qsort(arr, 2, ctypes.sizeof(ctypes.c_int), _CMP(compare))


# ---- trace workloads ----------------------------------------------------------------------


def _trace_workloads(scale: float) -> dict[str, Callable[[], Callable[[], Any]]]:
    sys.path.insert(0, str(BENCH))
    import trace_overhead as tw

    def pydantic_case() -> Callable[[], Any]:
        from pydantic import BaseModel

        class Address(BaseModel):
            street: str
            city: str
            zip: str

        class User(BaseModel):
            id: int
            name: str
            email: str
            tags: list[str]
            address: Address
            score: float = 0.0

        rows = [{"id": i, "name": f"user {i}", "email": f"u{i}@example.org",
                 "tags": ["a", "b", str(i % 5)], "score": i / 3,
                 "address": {"street": f"{i} Main St", "city": "Town", "zip": f"{i:05d}"}}
                for i in range(int(300 * scale))]

        def run() -> int:
            n = 0
            for r in rows:
                u = User.model_validate(r)
                n += len(u.model_dump()["tags"])
            return n
        return run

    return {
        "fib": lambda: lambda: tw.fib(int(20 + (scale < 1) * -2)),
        "hanoi": lambda: lambda: tw.hanoi(14 if scale >= 1 else 12, "a", "c", "b", []),
        "template": lambda: lambda: tw.render_pages(max(1, int(4 * scale))),
        "pydantic": pydantic_case,
        "fastapi": lambda: tw.make_fastapi_loop(max(2, int(20 * scale))),
    }


Tool = Callable[[], tuple[Callable[[], Any], Callable[[], Any]]]


def ap(**kw: Any) -> Tool:
    """apiprof.Profiler(**kw) as a tool: made in the child, its start and stop."""
    def make() -> tuple[Callable[[], Any], Callable[[], Any]]:
        import apiprof
        p = apiprof.Profiler(**kw)
        return p.start, p.stop
    return make


def _tracing_tools() -> dict[str, Tool]:
    import cProfile

    def cprof() -> tuple[Callable[[], Any], Callable[[], Any]]:
        if importlib.util.find_spec("profiling") is not None:
            import profiling.tracing  # type: ignore[import-not-found]
            p = profiling.tracing.Profile()
        else:
            p = cProfile.Profile()
        return p.enable, p.disable

    def yappi() -> tuple[Callable[[], Any], Callable[[], Any]]:
        import yappi as y
        y.set_clock_type("wall")
        return (lambda: y.start(builtins=True)), y.stop

    return {"baseline": lambda: (lambda: None, lambda: None), "apiprof": ap(),
            "apiprof builtins=False": ap(builtins=False),
            "hooks-only": ap(include=["<nothing>"], builtins=False),
            # stall detection is on by default; lock timing is on in apiprof run
            "apiprof no-stalls": ap(stall_threshold=None), "apiprof +locks": ap(locks=True),
            # the CPU split (a thread CPU clock read per event) and with it the GIL waits
            "apiprof cpu": ap(cpu=True),
            "apiprof +queries": ap(queries=True),
            "cProfile": cprof, "yappi": yappi}


# ---- memory ----------------------------------------------------------------------------------


def _memory_workloads(scale: float) -> dict[str, Callable[[], Callable[[], Any]]]:
    sys.path.insert(0, str(BENCH))
    import memory_overhead as mo
    import trace_overhead as tw

    return {
        "small objects": lambda: lambda: mo.small_objects(int(10_000 * scale)),
        "JSON decode": lambda: mo.make_json_decode(int(6_000 * scale)),
        "pydantic": lambda: mo.make_pydantic(int(2_000 * scale)),
        "fastapi": lambda: tw.make_fastapi_loop(max(2, int(40 * scale))),
    }


def _memory_tools() -> dict[str, Tool]:
    import tracemalloc

    def tm(frames: int) -> Tool:
        return lambda: ((lambda: tracemalloc.start(frames)), tracemalloc.stop)

    return {"baseline": lambda: (lambda: None, lambda: None),
            "tracemalloc(1)": tm(1), "tracemalloc(64)": tm(64),
            "apiprof full": ap(memory="full"), "apiprof sampled": ap(memory="sampled"),
            "apiprof full no-calls": ap(memory="full", calls=False),
            "apiprof sampled no-calls": ap(memory="sampled", calls=False)}


def run_memory(scale: float, out: dict[str, Any]) -> str:
    tools = list(_memory_tools())
    rows = [["workload", "baseline (M)", *[f"{t} extra" for t in tools[1:]],
             "full / tracemalloc(64)", "full no-calls / tracemalloc(64)"]]
    for w in _memory_workloads(scale):
        c = {t: count("memory", w, t, scale) for t in tools}
        base = c["baseline"]
        extra = {t: c[t] - base for t in tools}
        tm = extra["tracemalloc(64)"] or 1
        rows.append([w, f"{base / 1e6:.2f}",
                     *[f"{100 * extra[t] / base:+.1f}%" for t in tools[1:]],
                     f"{extra['apiprof full'] / tm:.2f}",
                     f"{extra['apiprof full no-calls'] / tm:.2f}"])
        out.setdefault("memory", {})[w] = {"instructions": c}
        print(f"  memory {w}: {rows[-1]}", flush=True)
    return table(rows)


# ---- query capture -------------------------------------------------------------------------


def _orders_db() -> str:
    """A SQLite file of 20 orders of 2 items and 20 customers (the shop's shape)."""
    import sqlite3
    path = os.path.join(tempfile.mkdtemp(prefix="apiprof-ir-"), "orders.db")
    with sqlite3.connect(path) as c:
        c.executescript(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT);"
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total INTEGER);"
            "CREATE TABLE items (order_id INTEGER, product TEXT, quantity INTEGER);")
        c.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                      [(i, f"customer {i}", f"c{i}@example.org") for i in range(20)])
        c.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i, 100 * i) for i in range(20)])
        c.executemany("INSERT INTO items VALUES (?, ?, ?)",
                      [(i, f"product {k}", k + 1) for i in range(20) for k in range(2)])
    return path


def _orders_requests(path: str, requests: int) -> Callable[[], Any]:
    """`requests` requests of a recent-orders route with an N+1: a connection each, 41
    statements (the orders, then each one's customer and items)."""
    import sqlite3

    def run() -> int:
        n = 0
        for _ in range(requests):
            conn = sqlite3.connect(path)
            try:
                orders = conn.execute("SELECT id, customer_id, total FROM orders "
                                      "ORDER BY id DESC LIMIT 20").fetchall()
                for oid, cid, _total in orders:
                    n += len(conn.execute("SELECT name, email FROM customers WHERE id = ?",
                                          (cid,)).fetchall())
                    n += len(conn.execute("SELECT product, quantity FROM items "
                                          "WHERE order_id = ?", (oid,)).fetchall())
            finally:
                conn.close()
        return n
    return run


# ---- line workloads -----------------------------------------------------------------------


def _line_case(workload: str, tool: str, scale: float) -> tuple[Callable[[], Any], Any, Any]:
    sys.path.insert(0, str(BENCH))
    import lines_overhead as lw

    if workload == "loop":
        target: Callable[..., Any] = lw.loop
        n = int(20000 * scale)
        fn: Callable[[], Any] = lambda: lw.loop(n)  # noqa: E731
    else:
        target = lw.aggregate
        records = lw.make_log(int(2000 * scale))
        fn = lambda: lw.aggregate(records)  # noqa: E731
    if tool == "apiprof":
        import apiprof
        lp = apiprof.LineProfiler(target)
        return fn, lp.start, lp.stop
    if tool == "line_profiler":
        import line_profiler
        lpp = line_profiler.LineProfiler(target)
        return fn, lpp.enable_by_count, lpp.disable_by_count
    return fn, (lambda: None), (lambda: None)


# ---- the ASGI case ---------------------------------------------------------------------------

SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
         "scheme": "http", "path": "/ping", "raw_path": b"/ping", "query_string": b"",
         "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
         "server": ("127.0.0.1", 80)}


class TimerMiddleware:
    """The hand-written peer: a pure ASGI middleware that times each call into a dict."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stats: dict[str, list[int]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import time
        t0 = time.perf_counter_ns()
        try:
            await self.app(scope, receive, send)
        finally:
            entry = self.stats.get(scope["path"])
            if entry is None:
                entry = self.stats[scope["path"]] = [0, 0]
            entry[0] += 1
            entry[1] += time.perf_counter_ns() - t0


def _asgi_app(variant: str) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    if variant in ("apiprof", "apiprof nowatch"):
        from apiprof.asgi import ProfilerMiddleware
        return ProfilerMiddleware(app, stall_stacks=variant == "apiprof")
    if variant == "timer":
        return TimerMiddleware(app)
    if variant == "fastapi-profiler":
        from fastapi_profiler import PyInstrumentProfilerMiddleware
        app.add_middleware(PyInstrumentProfilerMiddleware, server_app=app,
                           profiler_sample_rate=0.0, always_profile_errors=False,
                           is_print_each_request=False)
    return app


def _asgi_loop(variant: str, requests: int) -> Callable[[], Any]:
    app = _asgi_app(variant)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def many() -> None:
        for _ in range(requests):
            await app(dict(SCOPE), receive, send)

    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(many())


# ---- child ---------------------------------------------------------------------------------


def child(group: str, workload: str, tool: str, scale: float, mark: bool) -> None:
    if group == "trace":
        fn = _trace_workloads(scale)[workload]()
        start, stop = _tracing_tools()[tool]()
    elif group == "lines":
        fn, start, stop = _line_case(workload, tool, scale)
    elif group == "queries":
        fn = _orders_requests(_orders_db(), max(2, int(20 * scale)))
        start, stop = _tracing_tools()[tool]()
    elif group == "memory":
        fn = _memory_workloads(scale)[workload]()
        start, stop = _memory_tools()[tool]()
    else:
        fn = _asgi_loop(tool, int(workload))
        start = stop = lambda: None  # noqa: E731
    start()
    fn()  # warm-up under the tool
    gc.collect()  # the region's collections then fall at the same points in every run
    if mark:
        region(fn)
    else:
        fn()
    stop()


# ---- parent ----------------------------------------------------------------------------------



def _child_argv(group: str, workload: str, tool: str, scale: float) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", group, workload, tool,
            "--scale", str(scale)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


def _marker_symbol() -> str:
    """The function the children's region() runs the workload in (one toggle only: a
    qsort inside the workload must not toggle the count)."""
    try:
        from apiprof import _core
        return "apext_bench_region" if hasattr(_core, "_bench_region") else "qsort*"
    except ImportError:
        return "qsort*"


def count(group: str, workload: str, tool: str, scale: float) -> int:
    """Instructions of the region of one case (callgrind's "Collected")."""
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             f"--toggle-collect={_marker_symbol()}",
             f"--callgrind-out-file={d}/cg.out", *_child_argv(group, workload, tool, scale)],
            capture_output=True, text=True, env=_env(), check=False)
    m = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"{group}/{workload}/{tool}: callgrind failed:\n{out.stderr[-2000:]}")
    if int(m.group(1)) < 1_000_000:  # the ctypes call alone: the region was not marked
        raise RuntimeError(f"{group}/{workload}/{tool}: callgrind counted {m.group(1)} "
                           "instructions: the region was not marked (a build without "
                           "apext_bench_region and a C library whose qsort toggles twice)")
    return int(m.group(1))


def syscalls(variant: str, requests: int) -> dict[str, int]:
    """System calls made by a run of `requests` requests (strace -f), by name."""
    with tempfile.TemporaryDirectory() as d:
        argv = [*_child_argv("asgi", str(requests), variant, 1.0), "--no-mark"]
        subprocess.run(["strace", "-f", "-qq", "-o", f"{d}/st", *argv], env=_env(), check=True,
                       capture_output=True)
        names: dict[str, int] = {}
        for line in Path(f"{d}/st").read_text().splitlines():
            m = re.match(r"(?:\d+\s+)?(\w+)\(", line)
            if m:
                names[m.group(1)] = names.get(m.group(1), 0) + 1
    return names


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def run_trace(scale: float, absent: set[str], workloads: list[str], out: dict[str, Any]) -> str:
    tools = [t for t in _tracing_tools()
             if t.split()[0] not in absent and t != "apiprof +queries"]
    peer = "profiling.tracing" if importlib.util.find_spec("profiling") else "cProfile"
    rows = [["workload", "baseline (M)", *[f"{t} extra (M)" if t != "cProfile" else
                                             f"{peer} extra (M)" for t in tools[1:]],
             f"apiprof / {peer}", f"builtins=False / {peer}", f"hooks-only / {peer}"]]
    for w in workloads:
        c = {t: count("trace", w, t, scale) for t in tools}
        base = c["baseline"]
        extra = {t: c[t] - base for t in tools}
        cp = extra["cProfile"] or 1
        rows.append([w, f"{base / 1e6:.2f}", *[f"{extra[t] / 1e6:.2f}" for t in tools[1:]],
                     f"{extra['apiprof'] / cp:.2f}", f"{extra['apiprof builtins=False'] / cp:.2f}",
                     f"{extra['hooks-only'] / cp:.2f}"])
        out.setdefault("trace", {})[w] = {"instructions": c,
                                           "apiprof_over_cprofile": round(extra["apiprof"] / cp, 3)}
        print(f"  trace {w}: {rows[-1]}", flush=True)
    return table(rows)


def run_queries(scale: float, out: dict[str, Any]) -> str:
    """Query capture on a SQLite route with 41 statements per request: what it adds to
    the traced request, per request and as a share of the traced request."""
    requests = max(2, int(20 * scale))
    c = {t: count("queries", "orders", t, scale)
         for t in ("baseline", "apiprof", "apiprof +queries")}
    added = c["apiprof +queries"] - c["apiprof"]
    rows = [["workload", "baseline (M/request)", "apiprof (M/request)",
             "apiprof +queries (M/request)", "capture added / traced request"],
            [f"orders ({requests} requests, 41 statements each)",
             f"{c['baseline'] / requests / 1e6:.3f}", f"{c['apiprof'] / requests / 1e6:.3f}",
             f"{c['apiprof +queries'] / requests / 1e6:.3f}",
             f"{100 * added / c['apiprof']:+.1f}%"]]
    out["queries"] = {"instructions": c, "requests": requests,
                      "added_share": round(added / c["apiprof"], 4)}
    return table(rows)


def run_lines(scale: float, absent: set[str], out: dict[str, Any]) -> str:
    tools = ["baseline", "apiprof"] + ([] if "line_profiler" in absent else ["line_profiler"])
    rows = [["workload", "baseline (M)", "apiprof extra (M)", "line_profiler extra (M)",
             "apiprof / line_profiler"]]
    for w in ("loop", "aggregate"):
        c = {t: count("lines", w, t, scale) for t in tools}
        base = c["baseline"]
        ap = c["apiprof"] - base
        lp = c.get("line_profiler", base) - base
        rows.append([w, f"{base / 1e6:.2f}", f"{ap / 1e6:.2f}", f"{lp / 1e6:.2f}",
                     f"{ap / lp:.2f}" if lp else "-"])
        out.setdefault("lines", {})[w] = {"instructions": c}
        print(f"  lines {w}: {rows[-1]}", flush=True)
    return table(rows)


def run_asgi(requests: int, absent: set[str], out: dict[str, Any]) -> str:
    variants = ["none", "apiprof", "apiprof nowatch", "timer"] + (
        [] if "fastapi_profiler" in absent else ["fastapi-profiler"])
    c = {v: count("asgi", str(requests), v, 1.0) for v in variants}
    has_strace = shutil.which("strace") is not None
    rows = [["middleware", "instructions / request", "extra / request", "extra / timer's",
             "system calls / request (extra)"]]
    base = c["none"] / requests
    timer = c["timer"] / requests - base
    sys_none: dict[str, int] = {}
    for v in variants:
        per = c[v] / requests
        calls = "-"
        if has_strace:
            a, b = syscalls(v, requests), syscalls(v, 2 * requests)
            diff = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
            diff = {k: n for k, n in diff.items() if n}
            if v == "none":
                sys_none = diff
            extra = {k: n - sys_none.get(k, 0) for k, n in diff.items()}
            extra = {k: n for k, n in extra.items() if n}
            total = sum(extra.values()) / requests
            named = ", ".join(f"{k} {n / requests:.2f}" for k, n in sorted(extra.items()))
            calls = f"{total:.2f}" + (f" ({named})" if extra else "")
        rows.append([v, f"{per:.0f}", f"{per - base:+.0f}" if v != "none" else "0",
                     f"{(per - base) / timer:.2f}" if v != "none" and timer else "-", calls])
        print(f"  asgi {v}: {rows[-1]}", flush=True)
    out["asgi"] = {"requests": requests, "instructions": c}
    return table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="trace,lines,asgi,queries")
    parser.add_argument("--workloads", default="fib,hanoi,template,pydantic,fastapi")
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    parser.add_argument("--json", help="write the counts to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--no-mark", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.scale, not args.no_mark)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is needed (apt-get install valgrind)")
        return 1
    absent = set(ensure_peers(PEERS))
    for name in sorted(absent):
        print(f"{name}: does not install on Python {platform.python_version()}, left out")
    scale = 0.5 if args.quick else 1.0
    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    groups = args.groups.split(",")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"## Python {platform.python_version()} ({stamp}, {platform.machine()}, "
          f"{platform.processor() or platform.node()})\n")
    if "trace" in groups:
        print(run_trace(scale, absent, args.workloads.split(","), out), "\n", flush=True)
    if "lines" in groups:
        print(run_lines(scale, absent, out), "\n", flush=True)
    if "asgi" in groups:
        print(run_asgi(int(200 * scale), absent, out), "\n", flush=True)
    if "queries" in groups:
        print(run_queries(scale, out), "\n", flush=True)
    if "memory" in groups:
        print(run_memory(scale, out), "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
