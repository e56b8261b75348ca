"""Requests/s of apiprof-load beside wrk, same threads and connections, same nginx.

Usage: python bench/load_throughput.py [--threads 1] [--connections 10] [--duration 3]
                                       [--rounds 6]

Starts nginx (Debian) on a free 127.0.0.1 port with its own temporary configuration,
serving a 13-byte static file, then runs wrk and apiprof-load one after the other,
alternating which goes first, for several rounds. Installs wrk and nginx with apt-get
when they are missing (needs root). Prints an aligned table (req/s, CPU microseconds
per request of the load generator, ratio) and one JSON line; the verdict is the median
ratio over the rounds.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apiprof

LOAD = Path(apiprof.__file__).resolve().parent / "bin" / "apiprof-load"


def ensure_tools():
    missing = [name for name, exe in (("wrk", "wrk"), ("nginx", "nginx"))
               if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists()]
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path, port: int) -> subprocess.Popen:
    os.chmod(tmp, 0o755)  # nginx workers drop root: they must read the file
    root = tmp / "root"
    root.mkdir(mode=0o755)
    (root / "index.html").write_text("hello, world\n")
    conf = tmp / "nginx.conf"
    conf.write_text(f"""daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("nginx did not start")


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_wrk(url, args):
    cpu = child_cpu()
    out = subprocess.run(["wrk", f"-t{args.threads}", f"-c{args.connections}",
                          f"-d{args.duration}s", url], capture_output=True, text=True,
                         check=True).stdout
    cpu = child_cpu() - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.findall(r"(Non-2xx.*|Socket errors.*)", out)
    return rps, cpu * 1e6 / max(total, 1), "; ".join(errors)


def run_load(url, args):
    cpu = child_cpu()
    out = subprocess.run([str(LOAD), "--json", "-t", str(args.threads), "-c",
                          str(args.connections), "-d", str(args.duration), url],
                         capture_output=True, text=True, check=True).stdout
    cpu = child_cpu() - cpu
    warm = json.loads(out)["phases"]["warm"]
    bad = {k: v for k, v in warm["errors"].items() if v}
    if set(warm["status"]) != {"200"}:
        bad["status"] = warm["status"]
    errors = json.dumps(bad) if bad else ""
    return warm["rps"], cpu * 1e6 / max(warm["requests"], 1), errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    ensure_tools()
    rows = []
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        port = free_port()
        nginx = start_nginx(Path(tmp), port)
        url = f"http://127.0.0.1:{port}/index.html"
        try:
            run_wrk(url, argparse.Namespace(**{**vars(args), "duration": 1}))  # warm nginx
            for i in range(args.rounds):
                order = ("wrk", "apiprof-load") if i % 2 == 0 else ("apiprof-load", "wrk")
                got = {}
                for tool in order:
                    got[tool] = (run_wrk if tool == "wrk" else run_load)(url, args)
                rows.append(got)
        finally:
            nginx.send_signal(signal.SIGTERM)
            nginx.wait(10)
    ratios = [r["apiprof-load"][0] / r["wrk"][0] for r in rows]
    print(f"{'round':>5} {'wrk req/s':>11} {'apiprof-load req/s':>19} {'ratio':>6} "
          f"{'wrk cpu us/req':>15} {'apiprof cpu us/req':>19}")
    for i, (r, q) in enumerate(zip(rows, ratios, strict=True), 1):
        print(f"{i:>5} {r['wrk'][0]:>11.0f} {r['apiprof-load'][0]:>19.0f} {q:>6.3f} "
              f"{r['wrk'][1]:>15.2f} {r['apiprof-load'][1]:>19.2f}")
    med = statistics.median(ratios)
    med_wrk = statistics.median(r["wrk"][0] for r in rows)
    med_load = statistics.median(r["apiprof-load"][0] for r in rows)
    cpu_wrk = statistics.median(r["wrk"][1] for r in rows)
    cpu_load = statistics.median(r["apiprof-load"][1] for r in rows)
    print(f"{'med':>5} {med_wrk:>11.0f} {med_load:>19.0f} {med:>6.3f} {cpu_wrk:>15.2f} "
          f"{cpu_load:>19.2f}")
    errors = [f"round {i} {t}: {r[t][2]}" for i, r in enumerate(rows, 1) for t in r if r[t][2]]
    for line in errors:
        print(f"errors: {line}")
    print(json.dumps({
        "bench": "load_throughput", "threads": args.threads, "connections": args.connections,
        "duration_s": args.duration, "rounds": args.rounds, "median_ratio": round(med, 4),
        "wrk_rps": [round(r["wrk"][0]) for r in rows],
        "apiprof_load_rps": [round(r["apiprof-load"][0]) for r in rows],
        "wrk_cpu_us_per_req": round(cpu_wrk, 3), "apiprof_load_cpu_us_per_req": round(cpu_load, 3),
        "errors": errors, "machine": platform.machine(), "nproc": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
