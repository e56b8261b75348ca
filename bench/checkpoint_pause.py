"""Checkpoint pause: how long one checkpoint of a running profile holds the GIL (every
other thread of the program waits that long), by profile size.

    python bench/checkpoint_pause.py [--nodes N ...] [--repeat R]

A generated program of N distinct call paths is run under Profiler(checkpoint=...); the
checkpoint is then taken R times while the profiler still runs. A second thread spins
meanwhile and records the longest gap between its iterations, which is the pause the
program sees. Prints an aligned table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

from apiprof import Profiler, _core


def make_program(paths: int) -> object:
    """A module whose run() makes ``paths`` distinct call paths (a 2-level fan-out)."""
    width = max(1, int(paths ** 0.5))
    src = [f"def leaf_{i}(x):\n    return x + {i}\n" for i in range(width)]
    src += [f"def mid_{i}(x):\n" + "".join(f"    x = leaf_{j}(x)\n" for j in range(width))
            + "    return x\n" for i in range(width)]
    src.append("def run():\n" + "".join(f"    mid_{i}(0)\n" for i in range(width)))
    namespace: dict[str, object] = {}
    exec(compile("".join(src), "<generated>", "exec"), namespace)
    return namespace["run"]


def spin(stop: threading.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    worst = 0.0
    while not stop.is_set():
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    gaps.append(worst)


def measure(paths: int, repeat: int, directory: str) -> dict[str, float]:
    run = make_program(paths)
    out = os.path.join(directory, f"p{paths}.apiprof")
    p = Profiler(checkpoint=out, checkpoint_interval=3600)
    times, pauses = [], []
    with p:
        run()  # type: ignore[operator]
        for _ in range(repeat):
            stop, gaps = threading.Event(), []
            t = threading.Thread(target=spin, args=(stop, gaps))
            t.start()
            time.sleep(0.05)
            start = time.perf_counter()
            p.checkpoint_now()
            times.append(time.perf_counter() - start)
            time.sleep(0.05)
            stop.set()
            t.join()
            pauses.append(gaps[0])
    prof = _core.load(out)
    nodes = len(prof.functions())
    return {"paths": paths, "functions": nodes, "bytes": os.path.getsize(out),
            "checkpoint_ms": statistics.median(times) * 1e3,
            "max_pause_ms": max(pauses) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[10_000, 100_000, 250_000])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.setswitchinterval(0.001)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in args.nodes:
            rows.append(measure(n, args.repeat, d))
    print(f"{'call paths':>10} {'functions':>9} {'file':>10} {'checkpoint':>11} "
          f"{'max pause':>10}")
    for r in rows:
        print(f"{r['paths']:>10} {r['functions']:>9} {r['bytes'] / 1e6:>8.1f}MB "
              f"{r['checkpoint_ms']:>9.1f}ms {r['max_pause_ms']:>8.1f}ms")
    print(json.dumps({"python": sys.version.split()[0], "rows": rows}))


if __name__ == "__main__":
    main()
