"""Requests per second of a FastAPI app under wrk with no sampler, with apiprof-spy, with
py-spy (--nonblocking, and its default that pauses the target per sample) and with austin,
each at 100 Hz and at 1 kHz; and each sampler's own CPU time per tick.

    python bench/sampler_overhead.py [--rounds 3] [--duration 5] [--connections 8]

One uvicorn (one worker) serves bench/sampler_app.py for the whole run. Each round runs
every variant once, in an order that rotates between rounds so that drift of this shared
machine hits every variant alike: the sampler is attached, wrk runs for --duration
seconds, the sampler is stopped with SIGINT and its CPU time read from its rusage.
Reported: the median req/s over rounds, its ratio to "none", and the sampler's CPU per
tick (its CPU time / (rate x seconds attached)). The peers are installed with pip into
bench/.peers/samplers (not dependencies of apiprof): py-spy, and austin-dist 3.7 (4.x needs a
newer glibc than Debian 12's). Prints an aligned table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / ".peers" / "samplers"   # its own: pip --target skips a bin/ that exists
RATES = (100, 1000)


def ensure_peers() -> None:
    if not (PEERS / "bin" / "py-spy").exists() or not (PEERS / "bin" / "austin").exists():
        print("installing py-spy and austin-dist into bench/.peers/samplers", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(PEERS),
                        "py-spy", "austin-dist==3.7.0"], check=True)


def spy_binary() -> str:
    import apiprof

    return str(Path(apiprof.__file__).parent / "bin" / "apiprof-spy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sampler_cmd(variant: str, rate: int, pid: int, out: Path) -> list[str] | None:
    """The command line of a sampler variant ("none": None)."""
    if variant == "none":
        return None
    if variant == "apiprof-spy":
        return [spy_binary(), "record", str(pid), "-o", str(out), "-r", str(rate)]
    if variant.startswith("py-spy"):
        cmd = [str(PEERS / "bin" / "py-spy"), "record", "--pid", str(pid), "--rate", str(rate),
               "-f", "raw", "-o", str(out)]
        return cmd + (["--nonblocking"] if variant == "py-spy --nonblocking" else [])
    if variant == "austin":
        return [str(PEERS / "bin" / "austin"), "-p", str(pid), "-i", f"{1_000_000 // rate}",
                "-o", str(out)]
    raise ValueError(variant)


def wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", url],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    return float(m.group(1))


def run_variant(variant: str, rate: int, pid: int, url: str, duration: float,
                connections: int, tmp: Path) -> dict[str, float]:
    return measure(variant, sampler_cmd(variant, rate, pid, tmp / "out"), rate, url, duration,
                   connections)


def measure(variant: str, cmd: list[str] | None, rate: int, url: str, duration: float,
            connections: int) -> dict[str, float]:
    """req/s under wrk with the sampler cmd attached (None: none), and its CPU per tick."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True) if cmd else None
    time.sleep(0.5)   # attached and sampling
    if proc is not None and proc.poll() is not None:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{variant} exited with {proc.returncode}: {err.strip()}")
    started = time.monotonic()
    rps = wrk(url, duration, connections)
    result = {"rps": rps}
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(proc.pid, 0)
        attached = time.monotonic() - started + 0.5
        proc.returncode = os.waitstatus_to_exitcode(status)   # austin's is 254 after SIGINT
        cpu = usage.ru_utime + usage.ru_stime
        result["cpu_us_per_tick"] = cpu * 1e6 / (rate * attached)
        result["sampler_cpu_share"] = cpu / attached
    return result


def wait_listening(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


def table(results: dict[str, list[dict[str, float]]], title: str) -> list[dict[str, object]]:
    """Medians per variant and their ratio to "none", printed as an aligned table."""
    base = statistics.median(x["rps"] for x in results["none"])
    rows: list[dict[str, object]] = []
    for key, runs in results.items():
        rps = statistics.median(x["rps"] for x in runs)
        cpu = [x["cpu_us_per_tick"] for x in runs if "cpu_us_per_tick" in x]
        rows.append({"variant": key, "rps": round(rps, 1), "ratio": round(rps / base, 4),
                     "cpu_us_per_tick": round(statistics.median(cpu), 1) if cpu else None})
    print(f"{title:<34} {'req/s':>9} {'vs none':>8} {'CPU/tick':>10}")
    for row in rows:
        c = row["cpu_us_per_tick"]
        print(f"{row['variant']:<34} {row['rps']:>9.1f} {row['ratio']:>8.3f} "
              f"{f'{c:.1f} us' if c is not None else '-':>10}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    ensure_peers()
    variants = [("none", 0)] + [(v, r) for r in RATES for v in
                                ("apiprof-spy", "py-spy --nonblocking", "py-spy", "austin")]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sampler_app:app", "--port", str(port),
         "--log-level", "warning"], cwd=BENCH, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/items"
    results: dict[str, list[dict[str, float]]] = {}
    try:
        wait_listening(port)
        wrk(url, 1, args.connections)   # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for variant, rate in order:
                    key = f"{variant} @ {rate} Hz" if rate else variant
                    res = run_variant(variant, rate, server.pid, url, args.duration,
                                      args.connections, Path(tmp))
                    results.setdefault(key, []).append(res)
                    print(f"round {r + 1}: {key}: {res}", file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)
    rows = table(results, "variant")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"bench": "sampler_overhead", "python": sys.version.split()[0],
                      "rounds": args.rounds, "duration": args.duration,
                      "connections": args.connections, "rows": rows,
                      "bench_cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
