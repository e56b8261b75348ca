"""The outputs of ``apiprof check``: text, JSON, JUnit XML (one test case per route and
metric) and a Markdown summary for a CI comment. Route and function names come from the
app: JUnit escapes them as XML, Markdown escapes its table characters."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from xml.sax.saxutils import quoteattr

from ._check_decide import IMPROVED, REGRESSED, Decision
from ._table import Column, printable, render_lines


def _headline(decisions: list[Decision]) -> str:
    bad = sorted({d.route for d in decisions if d.verdict == REGRESSED})
    good = sum(d.verdict == IMPROVED for d in decisions)
    if bad:
        return f"apiprof check: REGRESSED in {len(bad)} route(s): {', '.join(bad)}"
    return f"apiprof check: no regression ({len(decisions)} checks, {good} improved)"


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


COLUMNS: list[Column[Decision]] = [
    Column("route", lambda d: d.route, "left"),
    Column("metric", lambda d: d.metric, "left"),
    Column("verdict", lambda d: d.verdict, "left"),
    Column("baseline", lambda d: _value(d.baseline)),
    Column("now", lambda d: _value(d.current)),
    Column("detail", lambda d: d.detail, "free"),
]


def text(decisions: list[Decision], notes: list[str]) -> str:
    lines = [*render_lines(COLUMNS, decisions), "", *notes, _headline(decisions)]
    return "\n".join(printable(line) for line in lines) + "\n"


def as_json(decisions: list[Decision], notes: list[str]) -> str:
    regressed = any(d.verdict == REGRESSED for d in decisions)
    return json.dumps({"tool": "apiprof-check", "schema": 1, "regressed": regressed,
                       "notes": notes, "decisions": [asdict(d) for d in decisions]},
                      indent=1) + "\n"


def _attr(s: str) -> str:
    return quoteattr(printable(s))  # XML 1.0 has no control characters, even escaped


def junit(decisions: list[Decision], notes: list[str]) -> str:
    failures = sum(d.verdict == REGRESSED for d in decisions)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="apiprof check" tests="{len(decisions)}" failures="{failures}">']
    for d in decisions:
        head = f'  <testcase classname={_attr(d.route)} name={_attr(d.metric)}'
        if d.verdict == REGRESSED:
            out.append(head + ">")
            out.append(f"    <failure message={_attr(d.detail)}/>")
            out.append("  </testcase>")
        else:
            out.append(head + f"><system-out>{d.verdict}</system-out></testcase>")
    if notes:
        out.append(f"  <system-out>{' '.join(_attr(n)[1:-1] for n in notes)}</system-out>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    s = printable(s)
    for ch in "\\|`*_[]<>":
        s = s.replace(ch, "\\" + ch)
    return s


def markdown(decisions: list[Decision], notes: list[str]) -> str:
    icon = {REGRESSED: "regressed", IMPROVED: "improved"}
    out = [f"### {_md(_headline(decisions))}", "",
           "| route | metric | verdict | baseline | now | detail |", "|---|---|---|---|---|---|"]
    shown = [d for d in decisions if d.verdict != "unchanged"] or decisions
    for d in shown:
        out.append(f"| {_md(d.route)} | {_md(d.metric)} | **{icon.get(d.verdict, d.verdict)}** "
                   f"| {_value(d.baseline)} | {_value(d.current)} | {_md(d.detail)} |")
    if len(shown) < len(decisions):
        out.append("")
        out.append(f"{len(decisions) - len(shown)} other checks unchanged.")
    out.extend(["", *(_md(n) for n in notes)])
    return "\n".join(out) + "\n"


FORMATS: dict[str, Callable[[list[Decision], list[str]], str]] = {
    "text": text, "json": as_json, "junit": junit, "markdown": markdown,
}
