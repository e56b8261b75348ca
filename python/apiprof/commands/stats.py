"""`apiprof stats --dir DIR`: route statistics merged from every worker's file in DIR."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..asgi import route_stats
from ..asgi.stats_files import read_dir
from ..errors import UsageError

# A live worker rewrites its file every flush_s (5 s by default), requests or not.
STALE_AFTER_S = 15.0


def worker_ages(files: list[Path], stale_after: float) -> list[dict[str, Any]]:
    """Per worker file: when it was written ("as of", UTC), how long ago, and whether
    that is longer than ``stale_after`` seconds."""
    now = time.time()
    out = []
    for path in files:
        try:
            mtime = path.stat().st_mtime
        except OSError:  # replaced or removed since it was read
            continue
        age = max(0.0, now - mtime)
        out.append({"file": path.name,
                    "as_of": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime)),
                    "age_s": round(age, 1), "stale": age > stale_after})
    return out


def format_workers(workers: list[dict[str, Any]], stale_after: float) -> str:
    lines = [f"worker files (as of, UTC; stale: not written for over {stale_after:g} s, "
             "the worker is gone or stuck and its figures stop there):"]
    width = max((len(w["file"]) for w in workers), default=0)
    for w in workers:
        lines.append(f"  {w['file']:<{width}}  {w['as_of'].replace('T', ' ')[:-1]}  "
                     f"{w['age_s']:.0f} s ago" + ("  STALE" if w["stale"] else ""))
    return "\n".join(lines) + "\n"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats", help="route statistics of the ASGI middleware, merged over workers",
        description="Merge the per-worker route statistics files that ProfilerMiddleware "
        "writes into DIR (stats_dir= or APIPROF_STATS_DIR) and print them.",
    )
    p.add_argument("--dir", dest="directory", metavar="DIR",
                   help="the stats directory (default: $APIPROF_STATS_DIR)")
    p.add_argument("--sort", choices=route_stats.SORT_KEYS, default="total",
                   help="order of the rows (largest first; default: total)")
    p.add_argument("--stale-after", metavar="S", type=float, default=STALE_AFTER_S,
                   help="a worker file not written for S seconds is stale: its worker is "
                        f"gone or stuck (default {STALE_AFTER_S:g}: 3 x the default flush_s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory = args.directory or os.environ.get("APIPROF_STATS_DIR")
    if not directory:
        raise UsageError("no stats directory: pass --dir DIR or set APIPROF_STATS_DIR")
    if not os.path.isdir(directory):
        raise UsageError(f"{directory}: not a directory")
    try:
        merged, files = read_dir(directory)
    except OSError as e:
        raise UsageError(f"{directory}: {e.strerror or e}") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.stale_after > 0:
        raise UsageError("--stale-after must be a positive number of seconds")
    rows = merged.snapshot()
    workers = worker_ages(files, args.stale_after)
    stale = [w for w in workers if w["stale"]]
    if args.json:
        out = {"version": 1, "workers": len(files), "routes": route_stats.summary(rows, args.sort),
               "leak_suspects": route_stats.leak_suspects(rows),
               "worker_files": workers, "stale_after_s": args.stale_after}
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"{len(files)} worker file(s) in {directory}\n")
        sys.stdout.write(route_stats.format_table(rows, args.sort))
        if workers:
            sys.stdout.write("\n" + format_workers(workers, args.stale_after))
    if stale:
        print(f"apiprof stats: {len(stale)} of {len(workers)} worker file(s) stale (not "
              f"written for over {args.stale_after:g} s): their figures stop at their "
              "as-of time", file=sys.stderr)
    return 0
