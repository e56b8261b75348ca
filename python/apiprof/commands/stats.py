"""`apiprof stats --dir DIR`: route statistics merged from every worker's file in DIR."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..asgi import route_stats
from ..asgi.stats_files import read_dir
from ..errors import UsageError


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
    rows = merged.snapshot()
    if args.json:
        out = {"version": 1, "workers": len(files), "routes": route_stats.summary(rows, args.sort)}
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"{len(files)} worker file(s) in {directory}\n")
        sys.stdout.write(route_stats.format_table(rows, args.sort))
    return 0
