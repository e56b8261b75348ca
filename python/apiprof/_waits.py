"""Each route's time split into running code and each wait kind, as text: what the text
report prints under the findings. The split is the C core's (``Profile.routes()``,
src/core/ap_findings.c; the kinds and their rules: src/core/ap_wait.c, docs/waits.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _core
from ._table import Column, format_ns, render_lines


def wait_kinds() -> list[tuple[str, str]]:
    """(kind, column title) of every wait kind, in the catalogue's order."""
    return [(m["name"][len("wait_"):-len("_ns")], m["label"]) for m in _core.metrics()
            if m["name"].startswith("wait_")]


def format_route_waits(routes: list[dict[str, Any]]) -> str:
    """Per route, per request: the time its code ran (less the blocking calls that
    waited) and the time of each wait kind that occurs; "" when no route waits."""
    rows = [r for r in routes if r["requests"] > 0]
    kinds = [(k, title) for k, title in wait_kinds() if any(r["waits"].get(k) for r in rows)]
    if not kinds:
        return ""

    def per_request(title: str, value: Callable[[dict[str, Any]], int]) -> Column[dict[str, Any]]:
        def cell(r: dict[str, Any]) -> str:
            v = value(r)
            return format_ns(v / r["requests"]) if v else "-"
        return Column(title, cell)

    def wait(kind: str) -> Callable[[dict[str, Any]], int]:
        return lambda r: r["waits"].get(kind, 0)

    columns: list[Column[dict[str, Any]]] = [
        Column("route", lambda r: r["route"], "left"),
        Column("requests", lambda r: str(r["requests"])),
        per_request("running", lambda r: r["running_ns"]),
        *(per_request(title, wait(k)) for k, title in kinds),
    ]
    head = ("time per request by route: running code, and waiting by kind "
            "(docs/waits.md)")
    return head + "\n" + "\n".join(render_lines(columns, rows)) + "\n"
