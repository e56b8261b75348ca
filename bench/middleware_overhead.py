"""Requests per second of the shop app with no middleware, with apiprof's statistics
(alone, without its stall watchdog thread, with apiprof-spy attached at 100 Hz
meanwhile, which makes the middleware publish each request's route for the samples, and
with request memory: memory=True), with fastapi-profiler and with pyinstrument's
documented middleware recipe, under wrk.

    python bench/middleware_overhead.py [--rounds 3] [--duration 5] [--connections 16]
                                        [--variants none,apiprof,...]

One uvicorn (one worker) per variant, all started at once on 127.0.0.1; each round runs
wrk against every (route, variant) pair in an order that rotates between rounds, so
that drift of this shared machine hits every variant alike. Reported: the median req/s
over rounds and its ratio to "none". The peers are installed with pip into
bench/.peers/middleware (not a dependency of apiprof); wrk is installed with apt-get if missing.
Prints an aligned table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHOP = REPO / "examples" / "shop"
PEERS = BENCH / ".peers" / "middleware"   # its own: pip --target skips what exists
VARIANTS = ("none", "apiprof", "apiprof-nowatch", "apiprof-sampled", "apiprof-memory",
            "fastapi-profiler", "pyinstrument")
ROUTES = {"fast": "/health", "medium": "/products/42"}


def ensure_tools() -> None:
    if shutil.which("wrk") is None:
        print("installing wrk (apt-get)", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not (PEERS / "fastapi_profiler").is_dir() or not (PEERS / "pyinstrument").is_dir():
        print("installing fastapi-profiler and pyinstrument into bench/.peers/middleware",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(PEERS), "fastapi-profiler", "pyinstrument"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(variant: str, db: Path, log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "BENCH_VARIANT": variant, "SHOP_DB": str(db),
           "PYTHONPATH": os.pathsep.join([str(SHOP), str(BENCH), str(PEERS)])}
    env.pop("APIPROF_STATS_DIR", None)
    cmd = [sys.executable, "-m", "uvicorn", "overhead_app:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with open(log_dir / f"bench-{variant}.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=BENCH, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with httpx.Client(trust_env=False, timeout=5) as client:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{variant}: server exited; see {log_dir}/bench-{variant}.log")
            try:
                if client.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{variant}: server did not start")
            time.sleep(0.1)
    return proc, url


def wrk(url: str, duration: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
        capture_output=True, text=True, check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk: {errors.group(1)} failed responses from {url}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise SystemExit(f"wrk output not understood:\n{out}")
    return float(m.group(1))


def sampler(pid: int, duration: int, work: Path) -> subprocess.Popen[bytes]:
    """apiprof-spy attached to pid at 100 Hz for the wrk run (it writes its profile
    into the work folder); started a moment before wrk, so that the middleware sees
    its heartbeat from wrk's first request."""
    import apiprof

    spy = Path(apiprof.__file__).parent / "bin" / "apiprof-spy"
    proc = subprocess.Popen([str(spy), "record", str(pid), "-o", str(work / "sampled.apiprof"),
                             "-r", "100", "-d", str(duration + 0.5)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated, 'none' first (default: all)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        print("middleware_overhead: rounds, duration and connections must be positive",
              file=sys.stderr)
        return 2
    variants = tuple(args.variants.split(","))
    if variants[0] != "none" or not set(variants) <= set(VARIANTS):
        print(f"middleware_overhead: --variants: 'none' first, then any of "
              f"{', '.join(VARIANTS[1:])}", file=sys.stderr)
        return 2
    ensure_tools()
    work = REPO / "reports" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "overhead-shop.db"
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    results: dict[tuple[str, str], list[float]] = {}
    try:
        servers["none"] = start("none", db, work)  # seeds the database first
        for v in variants[1:]:
            servers[v] = start(v, db, work)
        for path in ROUTES.values():  # warm-up
            for v in variants:
                wrk(servers[v][1] + path, 1, args.connections)
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for route, path in ROUTES.items():
                for v in order:
                    spy = sampler(servers[v][0].pid, args.duration, work) \
                        if v == "apiprof-sampled" else None
                    rps = wrk(servers[v][1] + path, args.duration, args.connections)
                    if spy is not None:
                        spy.wait()
                    results.setdefault((route, v), []).append(rps)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in servers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    rows = []
    for route, path in ROUTES.items():
        base = statistics.median(results[(route, "none")])
        for v in variants:
            runs = results[(route, v)]
            med = statistics.median(runs)
            rows.append({"route": route, "path": path, "variant": v, "median_rps": round(med, 1),
                         "runs": [round(x, 1) for x in runs], "ratio": round(med / base, 4)})
    head = ("route", "path", "variant", "req/s (median)", "vs none", "runs")
    body = [(r["route"], r["path"], r["variant"], f"{r['median_rps']:.0f}",
             f"{r['ratio']:.3f}", " ".join(f"{x:.0f}" for x in r["runs"])) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    for line in [head, *body]:
        print("  ".join(c.ljust(w) if i in (0, 1, 2, 5) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    print(json.dumps({"bench": "middleware_overhead", "rounds": args.rounds,
                      "duration_s": args.duration, "connections": args.connections,
                      "python": sys.version.split()[0], "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
