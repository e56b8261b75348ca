"""Cost per event of the tracer's context scope (Profiler(scope="context")).

    python bench/scope_overhead.py [--rounds N]

fib(22) (about 115k call and return events) is timed with no profiler, then with a
context-scoped profiler running while fib runs in a foreign context (every event is out
of scope: the cost other requests pay while one request is profiled), in the profiler's
own context (every event in scope: recorded, plus the cached context check), and with a
process-scoped profiler (recorded, no check). Best of 25 runs per variant, minimum over
rounds; printed as extra ns per event over no profiler, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import sys
import time
from collections.abc import Callable

import apiprof

N = 22


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def events(n: int) -> int:
    """Call and return events of fib(n): two per call."""
    calls = [0]

    def count(k: int) -> int:
        calls[0] += 1
        return k if k < 2 else count(k - 1) + count(k - 2)

    count(n)
    return 2 * calls[0]


def best(run: Callable[[], object], reps: int = 25) -> float:
    out = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        run()
        out = min(out, time.perf_counter() - t)
    return out


def one_round() -> dict[str, float]:
    got = {"none": best(lambda: fib(N))}
    p = apiprof.Profiler(scope="context", builtins=False).start()
    try:
        got["out_of_scope"] = best(lambda: contextvars.Context().run(fib, N))
        got["in_scope"] = best(lambda: fib(N))
    finally:
        p.stop()
    with apiprof.Profiler(builtins=False):
        got["process_scope"] = best(lambda: fib(N))
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1:
        print("scope_overhead: --rounds must be at least 1", file=sys.stderr)
        return 2
    rounds = [one_round() for _ in range(args.rounds)]
    best_s = {k: min(r[k] for r in rounds) for k in rounds[0]}
    n_events = events(N)
    extra = {k: (v - best_s["none"]) / n_events * 1e9 for k, v in best_s.items() if k != "none"}
    version = sys.version.split()[0]
    print(f"CPython {version}, fib({N}): {n_events} events, {best_s['none'] * 1e3:.2f} ms "
          "without a profiler")
    for k, v in extra.items():
        print(f"  {k:<14} {v:6.1f} ns/event extra")
    print(json.dumps({"bench": "scope_overhead", "python": version, "events": n_events,
                      "none_s": best_s["none"],
                      "extra_ns_per_event": {k: round(v, 1) for k, v in extra.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
