"""Line-profiling overhead: apiprof.LineProfiler vs line_profiler, side by side.

    python bench/lines_overhead.py [--reps N] [--quick]

Workloads: a 2-million-iteration loop, and a realistic function that parses and
aggregates access-log records. Each rep runs baseline (no profiler), apiprof and
line_profiler on every workload in turn (same process, same minute); the median of the
reps is reported with the overhead ratio to the baseline and apiprof's extra time as a
fraction of line_profiler's (the target is at most 0.5). line_profiler is installed into
the running interpreter's environment with pip if it is missing (a benchmark peer, not a
dependency of apiprof).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import apiprof
from _peers import ensure_peers


def ensure_peer() -> bool:
    """line_profiler, installed if missing; whether it is there (it may not build on the
    newest Pythons)."""
    return not ensure_peers({"line_profiler": "line_profiler"})


# ---- workloads ----------------------------------------------------------------------------


def loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i & 7
    return total


ROUTES = ["/products/{id}", "/orders/recent", "/login", "/products", "/health"]


def make_log(n: int) -> list[str]:
    out = []
    for i in range(n):
        route = ROUTES[i % len(ROUTES)].replace("{id}", str(i % 400))
        status = 500 if i % 97 == 0 else 200
        out.append(f"2026-11-24T10:{i // 3600 % 60:02d}:{i % 60:02d} GET {route} "
                   f"{status} {1.5 + (i * 7919) % 1000 / 10:.1f}ms ua=bench/{i % 3}")
    return out


def aggregate(records: list[str]) -> dict[str, Any]:
    """Per route template: count, errors, total and max latency."""
    stats: dict[str, list[float]] = {}
    for rec in records:
        parts = rec.split(" ")
        if len(parts) < 5:
            continue
        path = parts[2]
        segments = path.strip("/").split("/")
        if len(segments) > 1 and segments[1].isdigit():
            segments[1] = "{id}"
        key = parts[1] + " /" + "/".join(segments)
        latency = float(parts[4][:-2])
        entry = stats.get(key)
        if entry is None:
            entry = stats[key] = [0, 0, 0.0, 0.0]
        entry[0] += 1
        if parts[3].startswith("5"):
            entry[1] += 1
        entry[2] += latency
        if latency > entry[3]:
            entry[3] = latency
    return {k: {"count": v[0], "errors": v[1], "mean_ms": v[2] / v[0], "max_ms": v[3]}
            for k, v in stats.items()}


# ---- tools ------------------------------------------------------------------------------------


def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "absent"
    return str(getattr(importlib.import_module(module), "__version__", "?"))


def run_baseline(target: Callable[..., Any], fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_apiprof(target: Callable[..., Any], fn: Callable[[], Any]) -> float:
    lp = apiprof.LineProfiler(target)
    t0 = time.perf_counter()
    lp.start()
    fn()
    lp.stop()
    return time.perf_counter() - t0


def run_line_profiler(target: Callable[..., Any], fn: Callable[[], Any]) -> float:
    import line_profiler

    lp = line_profiler.LineProfiler(target)
    t0 = time.perf_counter()
    lp.enable_by_count()
    fn()
    lp.disable_by_count()
    return time.perf_counter() - t0


TOOLS: dict[str, Callable[[Callable[..., Any], Callable[[], Any]], float]] = {
    "baseline": run_baseline, "apiprof": run_apiprof, "line_profiler": run_line_profiler,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 3 reps")
    args = parser.parse_args(argv)
    if not ensure_peer():
        print(f"line_profiler does not install on Python {platform.python_version()}: "
              "apiprof alone against the baseline")
        TOOLS.pop("line_profiler")

    reps = 3 if args.quick else args.reps
    n_loop = 200_000 if args.quick else 2_000_000
    records = make_log(20_000 if args.quick else 100_000)
    workloads: dict[str, tuple[Callable[..., Any], Callable[[], Any]]] = {
        f"loop {n_loop:,}": (loop, lambda: loop(n_loop)),
        f"aggregate {len(records):,} records": (aggregate, lambda: aggregate(records)),
    }
    times: dict[str, dict[str, list[float]]] = {w: {t: [] for t in TOOLS} for w in workloads}
    for target, fn in workloads.values():   # warm up every path once
        for run in TOOLS.values():
            run(target, fn)
    for _ in range(reps):
        for name, (target, fn) in workloads.items():
            for tool, run in TOOLS.items():
                times[name][tool].append(run(target, fn))
    result: dict[str, Any] = {
        "bench": "lines_overhead", "python": platform.python_version(),
        "line_profiler": _version("line_profiler"),
        "clock": apiprof._core.clock_source(), "reps": reps, "workloads": {},
    }
    head = ["workload", "baseline", "apiprof", "x", "line_profiler", "x", "extra ratio"]
    table = [head]
    for name in workloads:
        med = {t: statistics.median(v) for t, v in times[name].items()}
        base = med["baseline"]
        med.setdefault("line_profiler", float("nan"))
        extra_a = med["apiprof"] - base
        extra_l = med["line_profiler"] - base
        ratio = extra_a / extra_l if extra_l > 0 else float("nan")
        result["workloads"][name] = {
            "median_s": med, "apiprof_overhead": med["apiprof"] / base,
            "line_profiler_overhead": med["line_profiler"] / base,
            "extra_ratio_apiprof_to_line_profiler": ratio,
        }
        table.append([name, f"{base * 1e3:.1f}ms", f"{med['apiprof'] * 1e3:.1f}ms",
                      f"{med['apiprof'] / base:.2f}", f"{med['line_profiler'] * 1e3:.1f}ms",
                      f"{med['line_profiler'] / base:.2f}", f"{ratio:.2f}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    print(f"Python {result['python']}, line_profiler {result['line_profiler']}, "
          f"clock {result['clock']}, median of {reps} reps; "
          "extra ratio = apiprof's extra time / line_profiler's (target <= 0.5)")
    for r in table:
        print("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                          strict=True))]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
