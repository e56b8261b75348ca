"""Cost of one apiprof.timer block (enter + exit) beside a pair of perf_counter calls.

Usage: python bench/timer_overhead.py [--n 200000] [--rounds 7]
Prints an aligned table (median ns per block over the rounds, the empty loop
subtracted) and one JSON line.
"""

import argparse
import json
import platform
import statistics
import sys
import time

import apiprof
from apiprof import _core

timer = apiprof.timer


def loop_empty(n):
    for _ in range(n):
        pass


def loop_perf_counter(n):
    pc = time.perf_counter
    acc = 0.0
    for _ in range(n):
        t0 = pc()
        acc += pc() - t0
    return acc


def loop_timer(n):
    for _ in range(n):
        with timer("bench"):
            pass


def loop_timer_nocpu(n):
    for _ in range(n):
        with timer("bench", cpu=False):
            pass


def loop_start_stop(n):
    for _ in range(n):
        t = timer("bench")
        t.start()
        t.stop()


def work():
    # ~4 us of pure Python: long enough that every CPU-clock read is a real one
    x = 0
    for i in range(120):
        x += i * i
    return x


def loop_work(n):
    for _ in range(n):
        work()


def loop_work_timed(n):
    for _ in range(n):
        with timer("bench"):
            work()


def measure(fn, n, rounds):
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn(n)
        out.append((time.perf_counter_ns() - t0) / n)
        timer.reset()
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    n, r = a.n, a.rounds
    base = measure(loop_empty, n, r)
    rows = {
        "perf_counter pair (Python)": measure(loop_perf_counter, n, r) - base,
        "apiprof.timer, with-block, cpu=True": measure(loop_timer, n, r) - base,
        "apiprof.timer, with-block, cpu=False": measure(loop_timer_nocpu, n, r) - base,
        "apiprof.timer, start()/stop()": measure(loop_start_stop, n, r) - base,
    }
    nw = max(n // 20, 1000)
    work_ns = measure(loop_work, nw, r)
    rows["apiprof.timer around 4us of work (real CPU reads)"] = (
        measure(loop_work_timed, nw, r) - work_ns
    )
    width = max(map(len, rows))
    print(f"python {platform.python_version()}  clock={_core.clock_source()}  n={n} rounds={r}")
    print(f"{'variant'.ljust(width)}  ns/block  x perf_counter pair")
    pc = rows["perf_counter pair (Python)"]
    for k, v in rows.items():
        print(f"{k.ljust(width)}  {v:8.0f}  {v / pc:6.2f}")
    print(
        json.dumps(
            {
                "bench": "timer_overhead",
                "python": platform.python_version(),
                "clock": _core.clock_source(),
                "ns_per_block": {k: round(v, 1) for k, v in rows.items()},
                "work_ns": round(work_ns, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
