"""CPU per request that ProfilerMiddleware (statistics only) adds, measured in-process.

Calls the example shop's ASGI app directly (no server, no sockets) for GET /health,
in a fresh process per measurement, with and without `instrument(app)`, alternating;
the difference of the medians is the middleware's own CPU per request, free of the
HTTP server's and the load generator's noise.

Usage: python bench/middleware_cpu.py [--rounds 6] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"

CHILD = r"""
import asyncio, os, sys, time
sys.path.insert(0, ".")
from shop.app import app

SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
         "scheme": "http", "path": "/health", "raw_path": b"/health", "query_string": b"",
         "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
         "server": ("127.0.0.1", 80)}

async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}

async def send(message):
    pass

async def main(n):
    queue, sent = asyncio.Queue(), []
    await queue.put({"type": "lifespan.startup"})
    async def lrecv():
        return await queue.get()
    async def lsend(m):
        sent.append(m)
    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, lrecv, lsend))
    while not sent:
        await asyncio.sleep(0.01)
    for _ in range(500):
        await app(dict(SCOPE), receive, send)
    t0 = time.process_time()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    print((time.process_time() - t0) / n * 1e9)
    await queue.put({"type": "lifespan.shutdown"})
    await life

asyncio.run(main(int(sys.argv[1])))
"""


def measure(with_apiprof: bool, requests: int, db: str) -> float:
    env = {**os.environ, "SHOP_ROUTE_TIMER": "0", "SHOP_DB": db,
           "SHOP_APIPROF": "1" if with_apiprof else "0"}
    env.pop("APIPROF_STATS_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(requests)], cwd=SHOP, env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=20000)
    a = ap.parse_args()
    none: list[float] = []
    apiprof: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "shop.db")
        for i in range(a.rounds):
            order = [False, True] if i % 2 == 0 else [True, False]
            for flag in order:
                (apiprof if flag else none).append(measure(flag, a.requests, db))
    mn, ma = statistics.median(none), statistics.median(apiprof)
    print(f"GET /health in-process, {a.requests} requests per run, {a.rounds} alternating rounds")
    print(f"{'variant':<22}{'CPU ns/request (median)':>26}  runs")
    print(f"{'no middleware':<22}{mn:>26.0f}  {' '.join(f'{v:.0f}' for v in none)}")
    print(f"{'apiprof (statistics)':<22}{ma:>26.0f}  {' '.join(f'{v:.0f}' for v in apiprof)}")
    print(f"{'added by apiprof':<22}{ma - mn:>26.0f}  ({(ma - mn) / mn:+.1%} of the app's own)")
    print(json.dumps({"bench": "middleware_cpu", "python": sys.version.split()[0],
                      "requests": a.requests, "rounds": a.rounds, "none_ns": round(mn),
                      "apiprof_ns": round(ma), "added_ns": round(ma - mn),
                      "none_runs": [round(v) for v in none],
                      "apiprof_runs": [round(v) for v in apiprof]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
