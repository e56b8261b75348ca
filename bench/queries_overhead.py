"""What query capture adds to a query-heavy route in trace mode: the shop's GET
/orders/recent?limit=20 (41 SQLite statements per request) under `apiprof run` with and
without `--queries`, side by side.

    python bench/queries_overhead.py [--rounds 5] [--requests 200]

Two uvicorns (one worker each) start at once on 127.0.0.1, each on its own copy of the
shop's database; every round sends --requests sequential requests to each, in an order
that alternates between rounds, so that drift of this shared machine hits both alike.
Reported: the median over rounds of each server's median request time, and the ratio.
Prints an aligned table and one JSON line.
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

import httpx

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "examples" / "shop"
APIPROF = Path(sys.executable).with_name("apiprof")
ROUTE = "/orders/recent?limit=20"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(flags: list[str], tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(APIPROF), "run", *flags, "-q", "--checkpoint-interval", "0", "-o",
         str(tmp / f"{name}.apiprof"), "-m", "uvicorn", "shop.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=SHOP, env={**os.environ, "SHOP_DB": str(tmp / f"{name}.db")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", trust_env=False).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"{name}: the server did not start")
        time.sleep(0.2)


def median_ms(client: httpx.Client, url: str, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert client.get(url + ROUTE).status_code == 200
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        servers = {"trace": start([], tmp, "trace"),
                   "trace+queries": start(["--queries"], tmp, "queries")}
        results: dict[str, list[float]] = {k: [] for k in servers}
        try:
            with httpx.Client(trust_env=False, timeout=60) as client:
                for _, url in servers.values():       # warm-up: caches, first imports
                    median_ms(client, url, 20)
                for r in range(args.rounds):
                    order = list(servers) if r % 2 == 0 else list(reversed(servers))
                    for name in order:
                        results[name].append(median_ms(client, servers[name][1], args.requests))
        finally:
            for proc, _ in servers.values():
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(60)
    base = statistics.median(results["trace"])
    with_q = statistics.median(results["trace+queries"])
    print(f"{'variant':<15} {'median ms/request':>18} {'ratio':>7}")
    for name, vals in results.items():
        m = statistics.median(vals)
        print(f"{name:<15} {m:>18.2f} {m / base:>7.3f}")
    print(json.dumps({"bench": "queries_overhead", "route": ROUTE, "rounds": args.rounds,
                      "requests": args.requests, "trace_ms": round(base, 3),
                      "trace_queries_ms": round(with_q, 3),
                      "added": round(with_q / base - 1, 4), "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
