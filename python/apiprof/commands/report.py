"""``apiprof report``: read a profile file and write it as text, JSON or pstats."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import _core
from .._lines import format_lines, is_line_profile
from .._profiler import SORT_KEYS, format_table
from ..errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="print or export a profile (text, json, pstats)",
        description="Read an apiprof profile and write it as a text table (the source with "
                    "per-line figures for a line profile), the JSON export "
                    "(docs/format.md) or a pstats file (pstats.Stats, snakeviz, gprof2dot).",
    )
    p.add_argument("file", metavar="FILE", help="a profile written by apiprof")
    p.add_argument("--format", choices=("text", "json", "pstats"), default="text")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout "
                   "(required for pstats, which is binary)")
    p.add_argument("--sort", default="cumtime", choices=sorted(SORT_KEYS),
                   help="text: sort key (default cumtime)")
    p.add_argument("--limit", type=int, default=30, help="text: rows to show (default 30, 0 = all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if args.format == "pstats" and not args.output:
        raise UsageError("pstats output is binary: give -o OUT")
    if os.path.isdir(args.file):
        raise UsageError(f"cannot read {args.file}: is a directory")
    try:
        profile = _core.load(args.file)
    except OSError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(f"not a readable apiprof profile: {e}") from None
    if profile.truncated:
        print(f"apiprof report: warning: {args.file} was cut short; showing what it holds",
              file=sys.stderr)
    try:
        if args.format == "json":
            profile.write_json(args.output or "/dev/stdout")
        elif args.format == "pstats":
            profile.write_pstats(args.output)
        elif is_line_profile(profile):
            text = format_lines(profile)
            if args.output:
                with open(args.output, "w") as f:
                    f.write(text)
            else:
                sys.stdout.write(text)
        else:
            text = format_table(profile.functions(), args.sort, args.limit or None,
                                header=f"apiprof: {args.file} (clock: "
                                       f"{profile.meta.get('clock', '?')})")
            if args.output:
                with open(args.output, "w") as f:
                    f.write(text)
            else:
                sys.stdout.write(text)
    except OSError as e:
        raise UsageError(str(e)) from None
    return 0
