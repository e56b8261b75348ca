"""``make demo``: run the shop under ``apiprof run -m uvicorn``, drive traffic on every
route, print the route table, the timer report and the function profile; line-profile the
hottest function under the same traffic (``apiprof lines --from``); then load a second shop
with ``apiprof bench --app --profile trace`` and print its per-route figures beside the
profile of the measured window.

    python examples/shop/demo.py [--rounds N] [--bench-seconds S]

Writes, under the repository root: reports/timers.txt and reports/timers.json (the app's
``apiprof.timer`` report), the per-worker route statistics in reports/apiprof-stats/ (read
with ``apiprof stats --dir reports/apiprof-stats``), reports/shop.apiprof (the function
profile of the driven server), reports/profile.txt, reports/profile.json and
reports/profile.pstats (``apiprof report``); then serves the shop again under ``apiprof lines
--from reports/shop.apiprof --top 1`` and writes the line profile of the hottest function to
reports/shop.lines.apiprof and reports/lines.txt; then reports/bench.json (the load figures
per URL and per route, with the profile's top functions) and reports/bench.apiprof (the
loaded server's profile, phases cold and warm); plus the demo's databases, and the server
logs when a server wrote something (a quiet run leaves none).
Exits non-zero with one line on stderr on failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from drive import DriveError, drive

SHOP_DIR = Path(__file__).resolve().parent
REPO_ROOT = SHOP_DIR.parents[1]
REPORTS = REPO_ROOT / "reports"
START_TIMEOUT_S = 30.0


class DemoError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
                raise DemoError(f"server exited with code {proc.returncode} before answering")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise DemoError(f"server did not answer {url}/health within {START_TIMEOUT_S:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGINT (graceful: the lifespan shutdown writes the reports), then SIGTERM, SIGKILL."""
    for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def bench(seconds: float, out: Path, database: Path) -> None:
    """A shop of its own under the function profiler, weighted traffic from traffic.txt:
    a 1 s cold phase, then the measured one; the result in ``out``, the profile beside."""
    cmd = [
        sys.executable, "-m", "apiprof", "bench", "--app", "shop.app:app",
        "--app-dir", str(SHOP_DIR), "--profile", "trace", "--health", "/health",
        "--urls", str(SHOP_DIR / "traffic.txt"), "-c", "8", "-t", "1", "--warmup", "1",
        "-d", str(seconds), "-o", str(out),
    ]
    print(f"\ndemo: apiprof bench --app --profile trace, {seconds:g} s after a 1 s warmup "
          f"({out.relative_to(REPO_ROOT)}, {out.with_suffix('.apiprof').relative_to(REPO_ROOT)})",
          flush=True)
    env = {k: v for k, v in os.environ.items() if k != "SHOP_TIMER_REPORT"}
    if subprocess.run(cmd, env={**env, "SHOP_DB": str(database)}).returncode != 0:
        raise DemoError("apiprof bench failed")


def drop_if_empty(log: Path) -> None:
    """Remove a server log that a quiet run left empty; one with output is kept and named."""
    if log.exists() and log.stat().st_size == 0:
        log.unlink()
    elif log.exists():
        print(f"demo: server output in {log.relative_to(REPO_ROOT)}")


def run(rounds: int, bench_seconds: float) -> None:
    REPORTS.mkdir(exist_ok=True)
    prefix = REPORTS / "timers"
    database = REPORTS / "demo-shop.db"
    log = REPORTS / "demo-server.log"
    stale = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    stats_dir = REPORTS / "apiprof-stats"
    stats_dir.mkdir(exist_ok=True)
    stale += list(stats_dir.glob("apiprof-routes-*.bin"))
    bench_db = REPORTS / "bench-shop.db"
    stale += [bench_db, Path(f"{bench_db}-wal"), Path(f"{bench_db}-shm")]
    for path in [*stale, prefix.with_suffix(".txt"), prefix.with_suffix(".json"),
                 REPORTS / "bench.json", REPORTS / "bench.apiprof"]:
        path.unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SHOP_TIMER_REPORT": str(prefix), "SHOP_DB": str(database),
           "APIPROF_STATS_DIR": str(stats_dir)}
    profile = REPORTS / "shop.apiprof"
    profile.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "apiprof", "run", "-q", "-o", str(profile),
        "-m", "uvicorn", "shop.app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    print(f"demo: starting the shop under apiprof run on {url} "
          f"(log: {log.relative_to(REPO_ROOT)})", flush=True)
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=SHOP_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_healthy(proc, url, log)
        started = time.monotonic()
        counts = drive(url, rounds, log=print)
        print(f"demo: {sum(counts.values())} requests in {time.monotonic() - started:.1f} s")
    except DriveError as exc:
        raise DemoError(f"traffic failed: {exc}") from exc
    finally:
        code = stop(proc)
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        raise DemoError(f"server exit code {code} (see {log.relative_to(REPO_ROOT)})")
    drop_if_empty(log)
    text, data = prefix.with_suffix(".txt"), prefix.with_suffix(".json")
    missing = [p.name for p in (text, data) if not p.exists()]
    if missing:
        raise DemoError(f"the server wrote no {' / '.join(missing)} at shutdown")
    report = text.read_text()
    if not report.strip():
        raise DemoError(f"empty timer report: is apiprof importable by {sys.executable}?")
    print()
    print_route_table(stats_dir)
    print()
    print(report, end="" if report.endswith("\n") else "\n")
    print(f"report: reports/{text.name} (JSON: reports/{data.name})")
    write_profile_reports(profile)
    line_profile_hottest(profile, env, rounds=1)
    if bench_seconds > 0:
        bench(bench_seconds, REPORTS / "bench.json", bench_db)


def line_profile_hottest(profile: Path, env: dict[str, str], rounds: int) -> None:
    """Serve the shop again under ``apiprof lines --from PROFILE --top 1``: the function
    responsible for the most time in the first run is line-profiled under the same traffic."""
    # keep the first run's timer report and route statistics
    env = {k: v for k, v in env.items() if k not in ("SHOP_TIMER_REPORT", "APIPROF_STATS_DIR")}
    out = REPORTS / "shop.lines.apiprof"
    log = REPORTS / "demo-lines-server.log"
    out.unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "apiprof", "lines", "-q", "--from", str(profile), "--top", "1",
        "-o", str(out), "-m", "uvicorn", "shop.app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    print(f"\ndemo: line-profiling the hottest function of {profile.relative_to(REPO_ROOT)} "
          f"(apiprof lines --from ... --top 1) on {url}", flush=True)
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=SHOP_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_healthy(proc, url, log)
        drive(url, rounds, log=lambda *a: None)
    except DriveError as exc:
        raise DemoError(f"traffic failed: {exc}") from exc
    finally:
        code = stop(proc)
    if code not in (0, -signal.SIGINT, -signal.SIGTERM) or not out.exists():
        raise DemoError(f"apiprof lines: exit code {code}, see {log.relative_to(REPO_ROOT)}")
    drop_if_empty(log)
    text = REPORTS / "lines.txt"
    cmd = [sys.executable, "-m", "apiprof", "report", str(out), "-o", str(text)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoError(f"apiprof report (lines): {done.stderr.strip()}")
    print(text.read_text(), end="")
    print(f"line profile: reports/{out.name} (reports/{text.name})")


def write_profile_reports(profile: Path) -> None:
    """``apiprof report`` of the server's function profile: text, JSON and pstats."""
    if not profile.exists():
        raise DemoError(f"apiprof run wrote no {profile.name}")
    outputs = {"text": REPORTS / "profile.txt", "json": REPORTS / "profile.json",
               "pstats": REPORTS / "profile.pstats"}
    for fmt, out in outputs.items():
        cmd = [sys.executable, "-m", "apiprof", "report", str(profile), "--format", fmt,
               "-o", str(out), "--limit", "40"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise DemoError(f"apiprof report --format {fmt}: {done.stderr.strip()}")
    print()
    print(outputs["text"].read_text(), end="")
    names = ", ".join(f"reports/{p.name}" for p in outputs.values())
    print(f"function profile: reports/{profile.name} ({names})")


def print_route_table(stats_dir: Path) -> None:
    """`apiprof stats --dir`: the middleware's per-route statistics, all workers merged."""
    cmd = [sys.executable, "-m", "apiprof", "stats", "--dir", str(stats_dir), "--sort", "total"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise DemoError(f"apiprof stats failed: {result.stderr.strip()}")
    print("route statistics (apiprof.fastapi.instrument; `apiprof stats --dir "
          f"{stats_dir.relative_to(REPO_ROOT)}`):")
    print(result.stdout, end="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bench-seconds", type=float, default=4.0, help="0: no load phase")
    args = parser.parse_args(argv)
    try:
        run(args.rounds, args.bench_seconds)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
