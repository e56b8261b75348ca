"""``apiprof diff A B``: two profiles compared function by function and path by path.

The matching, the deltas and the json, svg and html views are the C core's
(``_core.diff``, src/core/ap_diff.c); the text table is drawn here from the JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from .. import _core
from .._diff import Diff, FunctionDelta, from_json
from .._output import output_path
from .._profile_file import load_profile
from .._table import Column, format_bytes, format_ns, printable, render
from ..errors import UsageError
from .report import select_phase

FORMATS = ("text", "json", "html", "svg")

UNITS: dict[str, Callable[[float], str]] = {
    "nanoseconds": format_ns,
    "bytes": format_bytes,
    "count": lambda v: f"{v:.0f}" if v == int(v) else f"{v:.2f}",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "diff", help="compare two profiles (before A, after B): what got slower or faster",
        description="Compare profile A (before) with profile B (after). Functions are "
                    "matched by qualname and file (never by line, so edits that move code "
                    "still match), call paths by their functions. Every figure is per "
                    "request when both profiles count requests, else in total. Text and "
                    "JSON list the functions by the absolute change of --metric; HTML and "
                    "SVG draw a differential flame graph (widths from B, red where B spends "
                    "more, blue where less). docs/diff.md describes the JSON.",
    )
    p.add_argument("a", metavar="A", help="the profile before")
    p.add_argument("b", metavar="B", help="the profile after")
    p.add_argument("--format", "-f", choices=FORMATS,
                   help="output format (default: from the extension of -o, else text)")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    p.add_argument("--per", choices=("request", "total"),
                   help="divide by each profile's requests, or not (default: per request "
                        "when both profiles count requests)")
    p.add_argument("--metric", help="wall, cpu, await, memory (alias alloc), live or samples, "
                   "as apiprof report --metric (default: the first present of wall, samples, "
                   "cpu, memory, await, live)")
    p.add_argument("--function", metavar="TEXT",
                   help="text, json: only functions whose qualname or file contains TEXT")
    p.add_argument("--limit", type=int, default=20,
                   help="text: rows of the table of changes (default 20, 0 = all)")
    p.add_argument("--phase-a", metavar="NAME",
                   help="only the trees of this phase of A (apiprof run --phases; the steps "
                        "of apiprof bench --sweep: step-1, step-2, ...)")
    p.add_argument("--phase-b", metavar="NAME",
                   help="only the trees of this phase of B; with --phase-a, A and B may be "
                        "the same file (a low load step against the saturated one)")
    p.add_argument("--title", help="title of the HTML page / SVG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fmt = args.format
    out = None if args.output in (None, "-") else args.output
    if fmt is None and out is not None:
        fmt = _core.report_format_for_path(out)
        if fmt not in FORMATS:
            raise UsageError(f"cannot tell the format from {printable(out)!r}: pass --format "
                             f"({', '.join(FORMATS)})")
    fmt = fmt or "text"
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if args.function is not None and fmt in ("html", "svg"):
        raise UsageError("--function applies to text and json")
    a, b = load_profile(args.a), load_profile(args.b)
    name_a, name_b = args.a, args.b
    if args.phase_a is not None:
        a = select_phase(a, args.phase_a, args.a)
        name_a = f"{args.a} (phase {args.phase_a})"
    if args.phase_b is not None:
        b = select_phase(b, args.phase_b, args.b)
        name_b = f"{args.b} (phase {args.phase_b})"
    options = {"metric": args.metric, "per": args.per, "title": args.title,
               "name_a": name_a, "name_b": name_b}
    try:
        text = _core.diff(a, b, "json" if fmt == "text" else fmt, options)
    except (ValueError, LookupError, OSError) as e:
        raise UsageError(str(e)) from None
    if args.function is not None:
        doc = json.loads(text)
        doc["functions"] = [f for f in doc["functions"]
                            if args.function in f["qualname"] or args.function in f["file"]]
        if not doc["functions"]:
            raise UsageError(f"no function of either profile matches --function "
                             f"{printable(args.function)!r}")
        text = json.dumps(doc) + "\n"
    if fmt == "text":
        text = format_diff(from_json(json.loads(text)), name_a, name_b, args.limit)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        with output_path(out) as path, open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(str(e)) from None
    print(f"apiprof diff: wrote {fmt} to {out}", file=sys.stderr)
    return 0


def _signed(fmt: Callable[[float], str], v: float) -> str:
    return ("+" if v > 0 else "-" if v < 0 else " ") + fmt(abs(v))


def _relative(row: FunctionDelta, key: str) -> str:
    rel = row.relative(key)
    if rel is not None and rel >= 9:   # ten times as much or more: a ratio reads better
        return f"{rel + 1:.0f}x"
    if rel is not None:
        return f"{100 * rel:+.1f}%"
    return "new" if row.b.get(key) else ""


def format_diff(d: Diff, name_a: str, name_b: str, limit: int) -> str:
    """The text view: a header saying what is compared and how, the functions in both
    profiles by the absolute change of the metric, then the new and vanished ones."""
    unit = next(m["unit"] for m in _core.metrics() if m["name"] == d.key)
    fmt = UNITS.get(unit, str)
    scale = (f"per request (A {d.requests_a} requests, B {d.requests_b})"
             if d.per == "request" else "in total")
    both = [f for f in d.functions if f.status == "changed"]
    lines = [f"apiprof diff: A {printable(name_a)} -> B {printable(name_b)}",
             f"metric {d.metric} ({d.key}), figures {scale}; {len(both)} functions in both, "
             f"{len(d.new)} new in B, {len(d.vanished)} vanished from A", ""]
    label = d.key.removesuffix("_ns")
    columns: list[Column[FunctionDelta]] = [
        Column("change", lambda r: _signed(fmt, r.delta(d.key))),
        Column("%", lambda r: _relative(r, d.key)),
        Column(f"A {label}", lambda r: fmt(r.a.get(d.key, 0.0))),
        Column(f"B {label}", lambda r: fmt(r.b.get(d.key, 0.0))),
        Column("A calls", lambda r: UNITS["count"](r.a.get("calls", 0.0))),
        Column("B calls", lambda r: UNITS["count"](r.b.get("calls", 0.0))),
        Column("function", lambda r: f"{r.qualname} ({r.file})", "free"),
    ]
    shown = both if limit == 0 else both[:limit]
    text = "\n".join(lines) + "\n" + render(columns, shown, "-")
    if len(shown) < len(both):
        text += f"... {len(both) - len(shown)} more (--limit 0 shows all)\n"
    for title, rows in (("New in B", d.new), ("Vanished from A", d.vanished)):
        if rows:
            text += f"\n{title} ({len(rows)}):\n" + render(columns, rows if limit == 0
                                                            else rows[:limit], "-")
    return text
