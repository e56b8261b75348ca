"""Memory-profiling overhead: apiprof full and sampled vs tracemalloc vs memray, side by side.

    python bench/memory_overhead.py [--reps N] [--quick]

Workloads: building and dropping many small objects, JSON decode of a large document,
pydantic validation of thousands of models, and a FastAPI request loop through
httpx.ASGITransport. Tools: no profiler; tracemalloc with 1 frame, and with 64 frames (the
depth that gives the call path apiprof's tree gives); memray (its Tracker with
trace_python_allocators=True, what `memray run --trace-python-allocators` runs, writing its
capture file to a temporary directory); apiprof's function tracer alone (the call paths
the allocation hook charges to); apiprof memory="full" and memory="sampled" (512 KiB);
the same two with calls=False (`apiprof run --memory --no-calls`: no tracer, each tracked
block charged to the call path walked from the running frames);
and the middleware's request memory (memory=True: sampled, 512 KiB, no tracer), the
workload run as one HTTP request's work (a RouteRequest of apiprof's route table, as the
middleware makes, so every sampled block is charged to it).
Each rep runs every tool on every workload in turn (same process, same minute); the
median of the reps is reported with the overhead ratio to the baseline, and for apiprof
full its extra time as a fraction of tracemalloc's at 64 frames. memray is installed into
the running interpreter's environment with pip if it is missing (a benchmark peer, not a
dependency); if it does not install it is left out and named.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import apiprof
from _peers import ensure_peers
from apiprof import _core
from trace_overhead import make_fastapi_loop, run_baseline

PEERS = {"memray": "memray"}


# ---- workloads ----------------------------------------------------------------------


def small_objects(n: int) -> int:
    total = 0
    for _ in range(4):
        rows = [{"id": i, "name": f"row {i}", "tags": (i, i + 1)} for i in range(n)]
        total += len(rows)
        del rows
    return total


def make_json_decode(items: int) -> Callable[[], Any]:
    doc = json.dumps([{"id": i, "name": f"item {i}", "price": i * 0.25,
                       "tags": ["a", "b", str(i % 13)], "stock": {"eu": i % 7, "us": i % 5}}
                      for i in range(items)])

    def decode() -> int:
        return len(json.loads(doc))

    return decode


def make_pydantic(models: int) -> Callable[[], Any]:
    from pydantic import BaseModel

    class Stock(BaseModel):
        eu: int
        us: int

    class Item(BaseModel):
        id: int
        name: str
        price: float
        tags: list[str]
        stock: Stock

    raw = [{"id": i, "name": f"item {i}", "price": i * 0.25, "tags": ["a", str(i % 13)],
            "stock": {"eu": i % 7, "us": i % 5}} for i in range(models)]

    def validate() -> int:
        return sum(Item.model_validate(r).id for r in raw)

    return validate


# ---- tools --------------------------------------------------------------------------


def run_tracemalloc(frames: int) -> Callable[[Callable[[], Any]], float]:
    def run(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        tracemalloc.start(frames)
        fn()
        tracemalloc.take_snapshot()   # what a user reads it through
        tracemalloc.stop()
        return time.perf_counter() - t0
    return run


def run_memray(fn: Callable[[], Any]) -> float:
    import memray

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "capture.bin")
        t0 = time.perf_counter()
        with memray.Tracker(path, trace_python_allocators=True):
            fn()
        return time.perf_counter() - t0


def run_apiprof(memory: str | None, calls: bool = True) -> Callable[[Callable[[], Any]], float]:
    def run(fn: Callable[[], Any]) -> float:
        p = apiprof.Profiler(memory=memory, calls=calls)
        t0 = time.perf_counter()
        p.start()
        fn()
        p.stop()
        return time.perf_counter() - t0
    return run


def run_request_memory(fn: Callable[[], Any]) -> float:
    """fn as the work of one request under the middleware's memory=True."""
    table = _core.RouteTable()
    tracker = _core.MemoryTracker(None, mode="sampled")
    scope = {"type": "http", "method": "GET", "path": "/bench", "root_path": ""}

    async def app() -> None:
        return None

    def request() -> None:
        req = table.request(scope, None)
        coro = app()
        req.run(coro)   # names the request in this context, as the middleware does
        fn()
        coro.close()
        req.finish(False, "/bench")

    t0 = time.perf_counter()
    tracker.start()
    contextvars.copy_context().run(request)
    tracker.stop()
    elapsed = time.perf_counter() - t0
    (row,) = table.snapshot()
    assert row["mem_requests"] == 1
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller workloads, 3 reps")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else args.reps
    scale = 4 if args.quick else 1
    absent = ensure_peers(PEERS)
    workloads: dict[str, Callable[[], Any]] = {
        "small objects (4 x 50k dicts)": lambda: small_objects(50_000 // scale),
        "JSON decode (30k items, 3 MB)": make_json_decode(30_000 // scale),
        "pydantic (10k models)": make_pydantic(10_000 // scale),
        "FastAPI loop (300 requests)": make_fastapi_loop(300 // scale),
    }
    tools: dict[str, Callable[[Callable[[], Any]], float]] = {
        "baseline": run_baseline,
        "tracemalloc (1 frame)": run_tracemalloc(1),
        "tracemalloc (64 frames)": run_tracemalloc(64),
        "apiprof tracer alone": run_apiprof(None),
        "apiprof memory=full": run_apiprof("full"),
        "apiprof memory=sampled": run_apiprof("sampled"),
        "apiprof full, no calls": run_apiprof("full", calls=False),
        "apiprof sampled, no calls": run_apiprof("sampled", calls=False),
        "apiprof request memory": run_request_memory,
    }
    if "memray" not in absent:
        tools["memray (python allocators)"] = run_memray
    times: dict[str, dict[str, list[float]]] = {w: {t: [] for t in tools} for w in workloads}
    for fn in workloads.values():   # warm-up: imports, caches, pydantic's validators
        fn()
    for rep in range(reps):
        for w, fn in workloads.items():
            for t, run in tools.items():
                times[w][t].append(run(fn))
        print(f"rep {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    print(f"Python {platform.python_version()} on {platform.machine()}, {reps} reps, "
          f"median seconds (ratio to baseline)")
    if absent:
        print(f"not run (did not install): {', '.join(absent)}")
    for w in workloads:
        med = {t: statistics.median(v) for t, v in times[w].items()}
        base = med["baseline"]
        print(f"\n{w}")
        for t, s in med.items():
            print(f"  {t:28s} {s:8.4f}  x{s / base:5.2f}")
        extra_full = med["apiprof memory=full"] - base
        extra_hook = med["apiprof memory=full"] - med["apiprof tracer alone"]
        extra_tm = med["tracemalloc (64 frames)"] - base
        if extra_tm > 0:
            print(f"  apiprof full extra / tracemalloc(64) extra: {extra_full / extra_tm:.2f} "
                  f"(the allocation hook alone: {extra_hook / extra_tm:.2f})")
        print(f"  apiprof sampled extra: {100 * (med['apiprof memory=sampled'] - base) / base:.1f}%"
              f" (over the tracer alone: "
              f"{100 * (med['apiprof memory=sampled'] - med['apiprof tracer alone']) / base:.1f}%)")
        extra_walk = med["apiprof full, no calls"] - base
        if extra_tm > 0:
            print(f"  apiprof full, no calls extra / tracemalloc(64) extra: "
                  f"{extra_walk / extra_tm:.2f}")
        print(f"  apiprof sampled, no calls extra: "
              f"{100 * (med['apiprof sampled, no calls'] - base) / base:.1f}%")
        print(f"  apiprof request memory (no tracer) extra: "
              f"{100 * (med['apiprof request memory'] - base) / base:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
