"""The findings of a profile as text: what ``apiprof report --format findings`` prints and
what the text report and ``apiprof run``'s exit summary lead with. The findings themselves
are the C core's (``Profile.findings()``, src/core/ap_findings.c)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _core
from ._table import Column, format_bytes, format_ns, printable, render


def wait_kinds() -> list[tuple[str, str]]:
    """(kind, column title) of every wait kind (docs/waits.md), in the catalogue's order."""
    return [(m["name"][len("wait_"):-len("_ns")], m["label"]) for m in _core.metrics()
            if m["name"].startswith("wait_")]


def format_findings(findings: list[dict[str, Any]], limit: int | None = None) -> str:
    """Numbered findings, most important first, each with its severity and kind; the hot
    path under a hot function. ``limit`` keeps the first ones and says how many are left."""
    if not findings:
        return "findings: none (no route, function or wait stands out in this profile)\n"
    shown = findings if limit is None else findings[:limit]
    lines = [f"findings ({len(findings)}, most important first):"]
    for i, f in enumerate(shown, 1):
        # Names from the profiled code: control characters as escapes (one line each,
        # nothing that drives the terminal).
        lines.append(f"{i:2}. [{f['severity']}] {f['title']}: {printable(f['message'])}")
        if len(f["path"]) > 1:
            lines.append("    path: " + " -> ".join(printable(p) for p in f["path"]))
    if any(f["kind"] == "slow_route" for f in shown):
        lines.append("    (work: the time a route's code ran on threads; waiting and idle time are "
                     "not work)")
    if len(shown) < len(findings):
        lines.append(f"    ... {len(findings) - len(shown)} more: apiprof report FILE "
                     "--format findings")
    return "\n".join(lines) + "\n"


def format_routes(routes: list[dict[str, Any]]) -> str:
    """The route table (``Profile.routes()``): each route's request latency (p50/p95/p99,
    max) and work, then per request the time its code ran and each wait kind that occurs
    (docs/waits.md); slowest p95 first. Empty when no route has a latency histogram or a
    wait (a profile without route labels, or written before they were kept)."""
    rows = [r for r in routes if r["requests"] > 0 or r["latency"]]
    kinds = [(k, title) for k, title in wait_kinds() if any(r["waits"].get(k) for r in rows)]
    timed = any(r["latency"] for r in rows)
    if not timed and not kinds:
        return ""

    def lat(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: format_ns(r["latency"][key]) if r["latency"] else "-"

    def per_request(title: str, value: Callable[[dict[str, Any]], int]) -> Column[dict[str, Any]]:
        return Column(title, lambda r: format_ns(value(r) / r["requests"])
                      if value(r) and r["requests"] else "-")

    def wait(kind: str) -> Callable[[dict[str, Any]], int]:
        return lambda r: r["waits"].get(kind, 0)

    columns: list[Column[dict[str, Any]]] = [
        Column("route", lambda r: r["route"], "left"),
        Column("requests", lambda r: str(r["requests"])),
    ]
    if timed:
        columns += [Column("p50", lat("p50_ns")), Column("p95", lat("p95_ns")),
                    Column("p99", lat("p99_ns")), Column("max", lat("max_ns"))]
    worked = any(r["work_ns"] for r in rows)   # none: calls were not traced (--no-calls)
    if worked:
        columns.append(Column("work", lambda r: format_ns(r["work_ns"])))
    if kinds:
        columns += [per_request("running", lambda r: r["running_ns"]),
                    *(per_request(title, wait(k)) for k, title in kinds)]
    elif worked:
        columns.append(Column("waiting", lambda r: format_ns(r["wait_ns"])))
    rows.sort(key=lambda r: (-(r["latency"] or {}).get("p95_ns", -1), -r["work_ns"]))
    what = "routes (latency: a request's start to the end of its response"
    if worked:
        what += "; work: its code running on threads"
    if kinds:
        what += "; then per request: running code and waiting by kind, docs/waits.md"
    return what + "):\n" + render(columns, rows)


QUERY_ROWS = 20   # the text report's statements and calls, most time first


def format_queries(queries: list[dict[str, Any]], routes: list[dict[str, Any]],
                   limit: int = QUERY_ROWS) -> str:
    """The captured statements and outgoing calls (``Profile.queries()``, apiprof run
    --queries) of the requests, most time first: route, kind, count, per request, total,
    share of the route's time (running code and its waits) and the calling line; an N+1
    or a repeated call is marked. Empty when none was captured in a request."""
    rows = [q for q in queries if q["route"] is not None]
    if not rows:
        return ""
    by_route = {r["route"]: r for r in routes}

    def route_time(q: dict[str, Any]) -> int:
        r = by_route.get(q["route"])
        return r["running_ns"] + sum(r["waits"].values()) if r else 0

    def requests(q: dict[str, Any]) -> int:
        r = by_route.get(q["route"])
        return r["requests"] if r else 0

    rows.sort(key=lambda q: -q["total_ns"])
    shown = rows[:limit]
    columns: list[Column[dict[str, Any]]] = [
        Column("route", lambda q: printable(q["route"]), "left"),
        Column("kind", lambda q: "call" if q["kind"] == "http" else "query", "left"),
        Column("count", lambda q: str(q["count"])),
        Column("/request", lambda q: f"{q['count'] / requests(q):.3g}" if requests(q) else "-"),
        Column("total", lambda q: format_ns(q["total_ns"])),
        Column("share", lambda q: f"{100 * q['total_ns'] / route_time(q):.1f}%"
               if route_time(q) else "-"),
        Column("line", lambda q: printable(f"{(q['file'] or '?').rsplit('/', 1)[-1]}:{q['line']}"),
               "left"),
        Column("statement or call", lambda q: ("[N+1] " if q["n_plus_one"] and q["kind"] != "http"
                                               else "[repeated] " if q["n_plus_one"] else "")
               + printable(q["statement"]), "left"),
    ]
    more = f"    ... {len(rows) - len(shown)} more: apiprof report FILE --format json\n" \
        if len(shown) < len(rows) else ""
    return ("queries and outgoing calls (apiprof run --queries; share: of the route's time, "
            "docs/waits.md):\n" + render(columns, shown) + more)


UNRELEASED_ROWS = 8


def format_unreleased(profile: Any, limit: int = UNRELEASED_ROWS) -> str:
    """The unreleased objects of a memory profile (``Profile.unreleased_objects()``): the
    types with the most bytes still alive at the end, each with the site that made most
    of them and the route it served. When requests made some, only theirs (what requests
    left behind; start-up's are apart), else all (a script). Empty when there are none."""
    types = profile.unreleased_objects(requests=True)
    by_requests = bool(types)
    if not by_requests:
        types = profile.unreleased_objects()
    if not types:
        return ""

    def site(t: dict[str, Any]) -> str:
        if not t["sites"]:
            return "-"
        s = t["sites"][0]
        where = "(no Python frame)" if s["function"] is None else \
            f"{s['function']} ({(s['file'] or '?').rsplit('/', 1)[-1]}:{s['line']})"
        return printable(f"{where}: {s['count']}")

    columns: list[Column[dict[str, Any]]] = [
        Column("type", lambda t: printable(t["type"]), "left"),
        Column("count", lambda t: str(t["count"])),
        Column("bytes", lambda t: format_bytes(t["bytes"])),
    ]
    if by_requests:
        columns.append(Column("route", lambda t: printable(t["sites"][0]["route"] or "-")
                              if t["sites"] else "-", "left"))
    columns.append(Column("made most at: count", site, "left"))
    shown = types[:limit]
    more = f"    ... {len(types) - len(shown)} more types: apiprof report FILE --format json\n" \
        if len(shown) < len(types) else ""
    what = "made by requests" if by_requests else "allocated while recording"
    return (f"unreleased objects ({what}, still alive at the end):\n"
            + render(columns, shown) + more)
