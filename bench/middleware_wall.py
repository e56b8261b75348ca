"""Wall time per request of the middleware variants of bench/instructions.py, in-process.

    python bench/middleware_wall.py [--rounds 7] [--requests 5000]

The trivial FastAPI route of ``instructions.py --groups asgi`` (``GET /ping``) called
straight through its ASGI interface (no server): no middleware, apiprof's (statistics
only), the hand-written pure-ASGI timer and fastapi-profiler. Each run is a fresh process
that warms up, then times ``--requests`` requests with the wall clock and the process CPU
clock; runs of the variants alternate, in a rotated order each round. Reported per
variant: the median and the minimum over the rounds of ns per request (wall and CPU), and
the extra over no middleware as a share of it. On a shared machine the minimum is the
steadier figure; both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VARIANTS = ["none", "apiprof", "timer", "fastapi-profiler"]

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import instructions
run = instructions._asgi_loop(sys.argv[2], int(sys.argv[3]))
run(); run()
n = int(sys.argv[3])
w, c = time.perf_counter_ns(), time.process_time_ns()
run()
print((time.perf_counter_ns() - w) / n, (time.process_time_ns() - c) / n)
"""


def measure(variant: str, requests: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(BENCH), variant, str(requests)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    variants = a.variants.split(",")
    got: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for i in range(a.rounds):
        k = i % len(variants)
        for v in variants[k:] + variants[:k]:
            got[v].append(measure(v, a.requests))
    base = {f: statistics.median(r[f] for r in got["none"]) for f in (0, 1)}
    low = {f: min(r[f] for r in got["none"]) for f in (0, 1)}
    print(f"GET /ping in-process, {a.requests} requests per run, {a.rounds} rounds, "
          f"Python {sys.version.split()[0]}")
    print(f"{'variant':<18}{'wall ns/req med':>16}{'extra':>8}{'min':>10}{'extra':>8}"
          f"{'CPU ns/req med':>16}{'extra':>8}{'min':>10}{'extra':>8}")
    out = {}
    for v in variants:
        cells = []
        for f in (0, 1):
            med, mn = statistics.median(r[f] for r in got[v]), min(r[f] for r in got[v])
            cells += [f"{med:>16.0f}", f"{(med - base[f]) / base[f]:>+8.1%}",
                      f"{mn:>10.0f}", f"{(mn - low[f]) / low[f]:>+8.1%}"]
        print(f"{v:<18}" + "".join(cells))
        out[v] = [[round(x) for x in r] for r in got[v]]
    print(json.dumps({"bench": "middleware_wall", "python": sys.version.split()[0],
                      "requests": a.requests, "runs_wall_cpu": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
