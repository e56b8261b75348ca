"""apiprof check's false-alarm rate and the smallest slowdown it catches, on this machine.

    python bench/check_false_alarms.py [--runs 20] [--factors 1.1,1.2,1.3,1.5,2] [--catch-runs 5]
                                       [--min-effect 0.1]

Records one baseline of tests/py/apps/check_app.py with the default settings (5 rounds of 20
requests per route, alpha 0.01, minimum effect 10%), then runs `apiprof check` --runs times
on the unchanged app (every failure is a false alarm) and --catch-runs times with GET /work's
sleep multiplied by each factor (how often the slowdown is caught). Prints a Markdown table
for bench/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APPS = Path(__file__).resolve().parents[1] / "tests" / "py" / "apps"
CONFIG = """
[tool.apiprof.check]
app = "check_app:app"
app_dir = "{apps}"
paths = ["/items", "/work"]
count = ["check_app:lookup"]
min_effect = {min_effect}
"""


def check(root: Path, slow: float) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "apiprof", "check", "--baseline", "base.json",
                           "--format", "json", "-o", "out.json"], cwd=root, text=True,
                          capture_output=True, env={**os.environ, "CHECK_APP_SLOW": str(slow)})
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr)
    data = json.loads((root / "out.json").read_text())
    return done.returncode, {(d["route"], d["metric"]): d for d in data["decisions"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--factors", default="1.1,1.2,1.3,1.5,2")
    ap.add_argument("--catch-runs", type=int, default=5)
    ap.add_argument("--min-effect", type=float, default=0.10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text(CONFIG.format(apps=APPS, min_effect=args.min_effect))
        subprocess.run([sys.executable, "-m", "apiprof", "bench", "--app", "check_app:app",
                        "--save-baseline", "base.json"], cwd=root, check=True,
                       capture_output=True)
        t0 = time.monotonic()
        alarms = []
        shifts: dict[str, list[float]] = {}
        for _ in range(args.runs):
            code, v = check(root, 1.0)
            alarms.append(code != 0)
            for (route, metric), d in v.items():
                if metric == "latency_p50_ms":
                    shifts.setdefault(route, []).append(d["current"] / d["baseline"] - 1)
            if code:
                print("false alarm:", [k for k, d in v.items() if d["verdict"] == "regressed"])
        per_check = (time.monotonic() - t0) / args.runs
        print(f"\n{date()} on {platform.node()} ({os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}), Python {platform.python_version()}")
        print(f"unchanged app: {sum(alarms)} false alarms in {args.runs} checks "
              f"({per_check:.1f} s per check, min_effect {args.min_effect:g})")
        for route, xs in sorted(shifts.items()):
            print(f"  {route}: median latency change from the baseline {min(xs):+.0%} to "
                  f"{max(xs):+.0%} (median {statistics.median(xs):+.0%})")
        print()
        print("| GET /work sleep x | median latency change | caught |")
        print("|---|---|---|")
        for factor in (float(f) for f in args.factors.split(",")):
            caught, changes = 0, []
            for _ in range(args.catch_runs):
                code, v = check(root, factor)
                d = v[("GET /work", "latency_p50_ms")]
                changes.append(d["current"] / d["baseline"] - 1)
                caught += d["verdict"] == "regressed"
            print(f"| {factor:g} | {statistics.median(changes):+.0%} | "
                  f"{caught}/{args.catch_runs} |")


def date() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


if __name__ == "__main__":
    main()
