"""`apiprof report FILE`: write a view of a profile (every format is written by the C core)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from .. import _core
from ..errors import UsageError

FORMATS = ("html", "svg", "dot", "speedscope", "pprof", "collapsed", "callgrind", "chrome",
           "text", "json", "pstats")
BINARY = frozenset({"pprof", "pstats"})


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a report of a profile file",
        description="Write a view of an apiprof profile: an interactive HTML report, an SVG "
        "flame graph, a call graph, or an exchange format. Without --format the format "
        "follows the extension of -o (report.html, flame.svg, cpu.pb.gz, ...), else text.")
    p.add_argument("file", help="native profile file (apiprof run writes one)")
    p.add_argument("--format", "-f", choices=FORMATS, help="output format")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.add_argument("--metric", help="wall, cpu, await, memory or samples (default: the first "
                   "present of wall, samples, cpu, memory, await)")
    p.add_argument("--min-percent", type=float, default=None, metavar="P",
                   help="leave out what is below P%% of the total (dot, svg)")
    p.add_argument("--route", help="only the part of the profile labelled with this route")
    p.add_argument("--thread", help="only this thread")
    p.add_argument("--task", help="only this asyncio task")
    p.add_argument("--title", help="title of the HTML report / SVG")
    p.set_defaults(func=run)


def pick_format(fmt: str | None, output: str | None) -> str:
    """The explicit format, else the one the output's extension implies, else text."""
    if fmt:
        return fmt
    if output and output != "-":
        implied = _core.report_format_for_path(output)
        if implied is None:
            raise UsageError(f"cannot tell the format from {output!r}: pass --format")
        return implied
    return "text"


def run(args: argparse.Namespace) -> int:
    fmt = pick_format(args.format, args.output)
    out = None if args.output in (None, "-") else args.output
    if out is None and fmt in BINARY and sys.stdout.isatty():
        raise UsageError(f"{fmt} is binary: write it to a file with -o")
    if args.min_percent is not None and not 0 <= args.min_percent <= 100:
        raise UsageError("--min-percent must be between 0 and 100")
    options = {"metric": args.metric, "min_percent": args.min_percent, "route": args.route,
               "thread": args.thread, "task": args.task, "title": args.title}
    sys.stdout.flush()
    # `--format dot -o graph.svg`: the call graph laid out by Graphviz.
    via_dot = fmt == "dot" and out is not None and out.endswith(".svg")
    if via_dot and shutil.which("dot") is None:
        raise UsageError("an SVG call graph needs Graphviz's dot, which is not installed; "
                         "write a .dot file instead")
    target = f"{out}.dot.tmp" if via_dot and out else out
    try:
        truncated = _core.write_report(args.file, fmt, target, options)
    except (ValueError, LookupError, OSError) as e:
        raise UsageError(str(e)) from None
    if via_dot and target and out:
        try:
            r = subprocess.run(["dot", "-Tsvg", target, "-o", out], capture_output=True, text=True)
        finally:
            os.unlink(target)
        if r.returncode != 0:
            raise UsageError(f"dot failed: {r.stderr.strip().splitlines()[-1:]}")
    if truncated:
        print(f"apiprof report: warning: {args.file} was cut short; the report shows what it held",
              file=sys.stderr)
    if out is not None:
        print(out, file=sys.stderr)
    return 0
