"""What route/task labels and the timeline add to the function tracer's cost.

    python bench/labels_overhead.py [--reps N]

Workloads of trace_overhead.py (fib(25), a FastAPI request loop through
httpx.ASGITransport); per rep each configuration runs each workload in turn, and the
median is reported: Profiler() (no labels: the default, and what trace_overhead.py
measures), Profiler(labels=True) (what apiprof run uses), Profiler(timeline=1_000_000)
and both. The FastAPI loop's requests carry no route label here (no labelling layer):
it measures the per-event cache check and the per-step lookup.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import apiprof
from trace_overhead import fib, make_fastapi_loop

CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {}, "labels": {"labels": True}, "timeline": {"timeline": 1_000_000},
    "labels+timeline": {"labels": True, "timeline": 1_000_000},
}


def timed(fn: Callable[[], Any], options: dict[str, Any] | None) -> float:
    p = apiprof.Profiler(**options) if options is not None else None
    t0 = time.perf_counter()
    if p is not None:
        p.start()
    fn()
    if p is not None:
        p.stop()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    workloads: dict[str, Callable[[], Any]] = {"fib(25)": lambda: fib(25),
                                              "fastapi": make_fastapi_loop(200)}
    names = ["baseline", *CONFIGS]
    ms: dict[str, dict[str, list[float]]] = {w: {n: [] for n in names} for w in workloads}
    for _ in range(args.reps):
        for w, fn in workloads.items():
            for n in names:
                ms[w][n].append(1000 * timed(fn, None if n == "baseline" else CONFIGS[n]))
    print(f"labels / timeline overhead, Python {sys.version.split()[0]}, "
          f"median of {args.reps} reps (ms; x = ratio to baseline)")
    print("workload  " + "".join(f"{n:>20}" for n in names))
    result: dict[str, dict[str, float]] = {}
    for w in workloads:
        med = {n: statistics.median(ms[w][n]) for n in names}
        result[w] = med
        print(f"{w:<10}" + "".join(f"{med[n]:>12.1f} ({med[n] / med['baseline']:.2f}x)"
                                   for n in names))
    print(json.dumps({"bench": "labels_overhead", "python": sys.version.split()[0],
                      "reps": args.reps, "ms": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
