"""``apiprof report``: read a profile file and write one of its views.

text is drawn here from the profile object (``_core.load``), filtered and projected on
--metric as the C writers do; every other format (html, svg, dot, speedscope, pprof,
collapsed, callgrind, chrome, json, pstats) is written by the C report writers through
``_core.write_report``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from .. import _core
from .._findings import format_findings, format_queries, format_routes, format_unreleased
from .._lines import format_lines, is_line_profile
from .._output import output_path
from .._profile_file import CUT_META, load_profile
from .._profiler import SORT_KEYS, clock_note, format_table
from .._table import format_ns, printable
from ..errors import UsageError

FORMATS = ("html", "svg", "dot", "speedscope", "pprof", "collapsed", "callgrind", "chrome",
           "text", "json", "pstats", "findings")
# Findings the text report leads with (all of them: --format findings).
TEXT_FINDINGS = 8
BINARY = frozenset({"pprof", "pstats"})


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write a view of a profile (html, svg, dot, pprof, ... text)",
        description="Read an apiprof profile and write one of its views: an interactive HTML "
                    "report, an SVG flame graph, a call graph (dot), speedscope, pprof, "
                    "collapsed stacks, callgrind, a Chrome trace, a text table (the source "
                    "with per-line figures for a line profile), the JSON export "
                    "(docs/format.md) or a pstats file. Without --format the format "
                    "follows the extension of -o (report.html, flame.svg, cpu.pb.gz, ...), "
                    "else text.",
    )
    p.add_argument("file", metavar="FILE", help="a profile written by apiprof")
    p.add_argument("--format", "-f", choices=FORMATS, help="output format")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout "
                   "(required for the binary pstats and pprof)")
    p.add_argument("--sort", default="cumtime", choices=sorted(SORT_KEYS),
                   help="text: sort key (default cumtime)")
    p.add_argument("--limit", type=int, default=30, help="text: rows to show (default 30, 0 = all)")
    p.add_argument("--all", action="store_true",
                   help="text: also list library and idle-waiting functions (by default the "
                        "table lists the app's own functions)")
    p.add_argument("--metric", help="wall, cpu, await, memory (alias alloc: bytes allocated), "
                   "live (bytes still alive) or samples (default: the first present of wall, "
                   "samples, cpu, memory, await, live)")
    p.add_argument("--min-percent", type=float, default=None, metavar="P",
                   help="dot, svg: leave out what is below P%% of the total")
    p.add_argument("--route", help="only the part of the profile labelled with this route")
    p.add_argument("--thread", help="only this thread")
    p.add_argument("--task", help="only this asyncio task")
    p.add_argument("--pid", help="only this process (the label pid: apiprof run's workers, "
                                 "apiprof attach --subprocesses)")
    p.add_argument("--request", metavar="N",
                   help="only this request of apiprof's middleware (the label request: "
                        "apiprof attach --requests)")
    p.add_argument("--title", help="title of the HTML report / SVG")
    p.add_argument("--phase", metavar="NAME",
                   help="only the trees of this phase (apiprof run --phases; apiprof bench: "
                        "cold, warm)")
    p.add_argument("--baseline", metavar="FILE",
                   help="a profile of the app before a change: routes slower than in it "
                        "become regression findings (with --phase, its trees of that phase "
                        "when it has them)")
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
    if os.path.isdir(args.file):
        raise UsageError(f"cannot read {args.file}: is a directory")
    if fmt in BINARY and not args.output:
        raise UsageError(f"{fmt} output is binary: give -o OUT")
    if fmt in ("text", "findings"):
        return run_text(args, fmt)
    return run_view_format(args, fmt)


def load_baseline(args: argparse.Namespace) -> Any:
    """The --baseline profile (its --phase trees when it has that phase), or None."""
    if getattr(args, "baseline", None) is None:
        return None
    base = load_profile(args.baseline)
    if args.phase is not None and args.phase in phases(base):
        base = base.select({"phase": args.phase})
    return base


def run_text(args: argparse.Namespace, fmt: str = "text") -> int:
    """The text table (the source with per-line figures for a line profile), led by the
    findings, or the findings alone: the filters and --metric as the C writers apply
    them, then drawn here."""
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    profile = load_profile(args.file)
    if args.phase is not None:
        profile = select_phase(profile, args.phase, args.file)
    profile = select_labels(profile, args)
    baseline = load_baseline(args)
    if profile.truncated:
        print(f"apiprof report: warning: {args.file} was cut short; showing what it holds",
              file=sys.stderr)
    unit = "nanoseconds"
    if args.metric is None and profile.meta.get("calls") == "off":
        try:   # nothing was timed (apiprof run --no-calls): bytes, when any was tracked
            profile.project("memory")
            args.metric = "memory"
        except ValueError:
            pass
    if args.metric == "alloc":
        args.metric = "memory"
    if args.metric is not None:
        try:
            projected = profile.project(args.metric)
        except ValueError as e:
            raise UsageError(str(e)) from None
        unit = next(m["unit"] for m in _core.metrics() if m["view"] == args.metric)
    if fmt == "findings":
        text = format_findings(profile.findings(baseline=baseline))
    elif is_line_profile(profile):
        if args.metric not in (None, "wall"):
            raise UsageError(f"a line profile holds time per line only: --metric "
                             f"{args.metric} does not apply to it")
        text = format_lines(profile)
    else:
        functions = (projected if args.metric is not None else profile).functions()
        header = (f"apiprof: {args.file} (clock: {profile.meta.get('clock', '?')}"
                  f"{'' if args.phase is None else ', phase: ' + args.phase}"
                  f"{'' if args.metric is None else ', metric: ' + args.metric})\n")
        cut = profile.meta.get(CUT_META, "")
        if cut:   # a checkpoint of a run that did not end: the report says what it lacks
            header += f"cut: {printable(cut)}\n"
        split = profile.routes()
        routes, queries = format_routes(split), format_queries(profile.queries(), split)
        unreleased = format_unreleased(profile)
        found = profile.findings(baseline=baseline)
        text = (header + "\n" + format_findings(found, TEXT_FINDINGS) + "\n"
                + (routes + "\n" if routes else "") + (queries + "\n" if queries else "")
                + (unreleased + "\n" if unreleased else "")
                + format_table(functions, args.sort, args.limit or None, everything=args.all,
                               value=VALUE_FORMATS[unit]) + clock_note(profile.meta))
    out = None if args.output in (None, "-") else args.output
    try:
        if out is None:
            sys.stdout.write(text)
        else:
            with output_path(out) as path, open(path, "w") as f:
                f.write(text)
            wrote(out, fmt)
    except OSError as e:
        raise UsageError(str(e)) from None
    return 0


# How the text table writes self and total, by the unit of the metric shown.
VALUE_FORMATS: dict[str, Callable[[float], str]] = {
    "nanoseconds": format_ns,
    "bytes": lambda v: f"{v:.0f}B",
    "count": lambda v: f"{v:.0f}" if v == int(v) else f"{v:.2f}",
}


def wrote(path: str, fmt: str) -> None:
    """The line saying where a report went (and how to look at an HTML one)."""
    where = os.path.abspath(path)
    hint = f"; open file://{where} in a browser" if fmt == "html" else ""
    print(f"apiprof report: wrote the {fmt} report to {path}{hint}", file=sys.stderr)


def run_view_format(args: argparse.Namespace, fmt: str) -> int:
    """Every other format, written by the C report writers (which apply the
    filters and --metric; the label filters are checked here first, so that a
    filter matching nothing is the same line in every format)."""
    out = None if args.output in (None, "-") else args.output
    if args.min_percent is not None and not 0 <= args.min_percent <= 100:
        raise UsageError("--min-percent must be between 0 and 100")
    options = {"metric": args.metric, "min_percent": args.min_percent, "route": args.route,
               "thread": args.thread, "task": args.task, "title": args.title,
               "baseline": load_baseline(args)}
    sys.stdout.flush()
    # `--format dot -o graph.svg`: the call graph laid out by Graphviz.
    via_dot = fmt == "dot" and out is not None and out.endswith(".svg")
    if via_dot and shutil.which("dot") is None:
        raise UsageError("an SVG call graph needs Graphviz's dot, which is not installed; "
                         "write a .dot file instead")
    profile = load_profile(args.file)
    if args.phase is not None:
        profile = select_phase(profile, args.phase, args.file)
    if args.pid is not None or args.request is not None:
        # the C writers filter route, thread and task themselves
        profile = select_labels(profile, args)
    else:
        select_labels(profile, args)
    with contextlib.ExitStack() as stack:
        path = None if out is None else stack.enter_context(output_path(out))
        if via_dot:
            # The dot text in a file of its own, laid out by Graphviz into path.
            fd, dot_file = tempfile.mkstemp(suffix=".dot")
            os.close(fd)
            stack.callback(os.unlink, dot_file)
        try:
            truncated = _core.write_report(profile, fmt, dot_file if via_dot else path, options)
        except (ValueError, LookupError, OSError) as e:
            raise UsageError(str(e)) from None
        except MemoryError as e:
            raise UsageError(f"the {fmt} view of {args.file} does not fit in memory or the "
                             f"output limit ({e or 'out of memory'})") from None
        if via_dot:
            r = subprocess.run(["dot", "-Tsvg", dot_file, "-o", path], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise UsageError(f"dot failed: {r.stderr.strip().splitlines()[-1:]}")
    if truncated:
        print(f"apiprof report: warning: {args.file} was cut short; showing what it holds",
              file=sys.stderr)
    if out is not None:
        wrote(out, fmt)
    return 0


def select_labels(profile: Any, args: argparse.Namespace) -> Any:
    """The trees carrying the --route / --thread / --task / --pid / --request labels asked
    for (the text table reads them; the C writers filter the same way); UsageError when
    there are none."""
    wanted = {k: v for k in ("route", "thread", "task", "pid", "request")
              if (v := getattr(args, k, None))}
    if not wanted:
        return profile
    chosen = profile.select(wanted)
    if not chosen.trees():
        what = " ".join(f"{k}={v}" for k, v in wanted.items())
        have = sorted({t["labels"][k] for t in profile.trees() for k in wanted
                       if k in t["labels"]},
                      key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))
        # numbers in order (pids, requests), and not thousands of them on one line
        listed = ", ".join(have[:20]) + (f", ... ({len(have)} in all)" if len(have) > 20 else "")
        raise UsageError(f"no part of the profile has {what}"
                         f"{' (it has: ' + listed + ')' if have else ''}")
    return chosen


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
