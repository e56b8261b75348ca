"""``apiprof report``: read a profile file and write it as text, JSON or pstats."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import _core
from .._profiler import SORT_KEYS, format_table
from ..errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="print or export a profile (text, json, pstats)",
        description="Read an apiprof profile and write it as a text table, the JSON export "
                    "(docs/format.md) or a pstats file (pstats.Stats, snakeviz, gprof2dot).",
    )
    p.add_argument("file", metavar="FILE", help="a profile written by apiprof")
    p.add_argument("--format", choices=("text", "json", "pstats"), default="text")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout "
                   "(required for pstats, which is binary)")
    p.add_argument("--sort", default="cumtime", choices=sorted(SORT_KEYS),
                   help="text: sort key (default cumtime)")
    p.add_argument("--limit", type=int, default=30, help="text: rows to show (default 30, 0 = all)")
    p.add_argument("--phase", metavar="NAME",
                   help="only the trees of this phase (apiprof run --phases; apiprof bench: "
                        "cold, warm)")
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
    if args.phase is not None:
        profile = select_phase(profile, args.phase, args.file)
    if profile.truncated:
        print(f"apiprof report: warning: {args.file} was cut short; showing what it holds",
              file=sys.stderr)
    try:
        if args.format == "json":
            profile.write_json(args.output or "/dev/stdout")
        elif args.format == "pstats":
            profile.write_pstats(args.output)
        else:
            text = format_table(profile.functions(), args.sort, args.limit or None,
                                header=f"apiprof: {args.file} (clock: "
                                       f"{profile.meta.get('clock', '?')}"
                                       f"{'' if args.phase is None else ', phase: ' + args.phase})")
            if args.output:
                with open(args.output, "w") as f:
                    f.write(text)
            else:
                sys.stdout.write(text)
    except OSError as e:
        raise UsageError(str(e)) from None
    return 0


def phases(profile: Any) -> list[str]:
    """The values of the label ``phase`` in the profile, in order of first appearance."""
    seen: dict[str, None] = {}
    for tree in profile.trees():
        if "phase" in tree["labels"]:
            seen.setdefault(tree["labels"]["phase"], None)
    return list(seen)


def select_phase(profile: Any, phase: str, file: str) -> Any:
    """The trees labelled ``phase=PHASE``; UsageError when there are none."""
    chosen = profile.select({"phase": phase})
    if not chosen.trees():
        have = phases(profile)
        raise UsageError(f"{file} has no phase {phase!r} "
                         f"({'its phases: ' + ', '.join(have) if have else 'it has no phases'})")
    return chosen
