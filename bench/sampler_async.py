"""The cost of sampling await chains: req/s of an async FastAPI app whose requests wait in
awaits (bench/sampler_async_app.py, behind apiprof's middleware) with no sampler,
apiprof-spy, apiprof-spy --async and, on CPython 3.15, the standard library's
`profiling.sampling --async-aware` (all tasks), each at 100 Hz; and each sampler's own
CPU time per tick.

    python bench/sampler_async.py [--rounds 3] [--duration 5] [--connections 64]

With --connections C, about C requests are in flight (each waits 50 ms), so --async reads
up to 16 of their chains per tick (docs/sampler.md). Rounds rotate the order of the
variants as sampler_overhead.py does. Prints an aligned table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sampler_overhead import free_port, spy_binary, wrk

BENCH = Path(__file__).resolve().parent
RATE = 100


def sampler_cmd(variant: str, pid: int, out: Path) -> list[str] | None:
    if variant == "none":
        return None
    if variant == "apiprof-spy":
        return [spy_binary(), "record", str(pid), "-o", str(out), "-r", str(RATE)]
    if variant == "apiprof-spy --async":
        return [spy_binary(), "record", str(pid), "-o", str(out), "-r", str(RATE), "--async"]
    if variant == "profiling.sampling --async-aware":
        return [sys.executable, "-m", "profiling.sampling", "attach", "-r", str(RATE),
                "--async-aware", "--async-mode", "all", "--collapsed", "-o", str(out), str(pid)]
    raise ValueError(variant)


def run_variant(variant: str, pid: int, url: str, duration: float, connections: int,
                tmp: Path) -> dict[str, float]:
    cmd = sampler_cmd(variant, pid, tmp / "out")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True) if cmd else None
    time.sleep(0.5)
    if proc is not None and proc.poll() is not None:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{variant} exited with {proc.returncode}: {err.strip()}")
    started = time.monotonic()
    result = {"rps": wrk(url, duration, connections)}
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        _, _status, usage = os.wait4(proc.pid, 0)
        attached = time.monotonic() - started + 0.5
        cpu = usage.ru_utime + usage.ru_stime
        result["cpu_us_per_tick"] = cpu * 1e6 / (RATE * attached)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    variants = ["none", "apiprof-spy", "apiprof-spy --async"]
    if sys.version_info >= (3, 15):
        variants.append("profiling.sampling --async-aware")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sampler_async_app:app", "--port", str(port),
         "--log-level", "warning", "--backlog", "4096"], cwd=BENCH, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/wait"
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        wrk(url, 1, args.connections)   # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for variant in order:
                    res = run_variant(variant, server.pid, url, args.duration,
                                      args.connections, Path(tmp))
                    results.setdefault(variant, []).append(res)
                    print(f"round {r + 1}: {variant}: {res}", file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)
    base = statistics.median(x["rps"] for x in results["none"])
    rows = []
    for key, runs in results.items():
        rps = statistics.median(x["rps"] for x in runs)
        cpu = [x["cpu_us_per_tick"] for x in runs if "cpu_us_per_tick" in x]
        rows.append({"variant": key, "rps": round(rps, 1), "ratio": round(rps / base, 4),
                     "cpu_us_per_tick": round(statistics.median(cpu), 1) if cpu else None})
    print(f"{'variant @ 100 Hz':<34} {'req/s':>9} {'vs none':>8} {'CPU/tick':>10}")
    for row in rows:
        cpu = f"{row['cpu_us_per_tick']:.1f} us" if row["cpu_us_per_tick"] is not None else "-"
        print(f"{row['variant']:<34} {row['rps']:>9.1f} {row['ratio']:>8.3f} {cpu:>10}")
    print(json.dumps({"bench": "sampler_async", "python": sys.version.split()[0],
                      "rounds": args.rounds, "duration": args.duration,
                      "connections": args.connections, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
