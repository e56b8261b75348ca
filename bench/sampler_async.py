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
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from sampler_overhead import free_port, measure, spy_binary, table, wait_listening, wrk

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
        wait_listening(port)
        wrk(url, 1, args.connections)   # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for variant in order:
                    cmd = sampler_cmd(variant, server.pid, Path(tmp) / "out")
                    res = measure(variant, cmd, RATE, url, args.duration, args.connections)
                    results.setdefault(variant, []).append(res)
                    print(f"round {r + 1}: {variant}: {res}", file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)
    rows = table(results, f"variant @ {RATE} Hz")
    print(json.dumps({"bench": "sampler_async", "python": sys.version.split()[0],
                      "rounds": args.rounds, "duration": args.duration,
                      "connections": args.connections, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
