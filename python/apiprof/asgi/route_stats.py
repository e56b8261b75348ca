"""Route statistics as users read them: this process's table, ``stats()``, ``reset()``,
the sort orders and the text table (``apiprof stats``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .. import _core
from .._table import Column, format_ms, render
from .stats_files import read_dir

SORT_KEYS = ("total", "p50", "p95", "p99", "max", "cpu", "count", "errors")
_SORT_FIELDS = {"total": "total_ns", "p50": "p50_ns", "p95": "p95_ns", "p99": "p99_ns",
                "max": "max_ns", "cpu": "cpu_ns", "count": "count", "errors": "errors"}

_table: _core.RouteTable | None = None


def table(max_keys: int = 256) -> _core.RouteTable:
    """The process's route table (made on first use with ``max_keys``)."""
    global _table
    if _table is None:
        _table = _core.RouteTable(max_keys)
    return _table


def stats(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Route statistics as a JSON-able dict: this process's, or, with ``directory``, the
    exact merge of every worker's file in it."""
    if directory is None:
        rows = table().snapshot()
        files = 0
    else:
        merged, paths = read_dir(directory)
        rows, files = merged.snapshot(), len(paths)
    return {"version": 1, "workers": files, "routes": summary(rows)}


def reset() -> None:
    """Forgets this process's route statistics (other workers' files are not touched)."""
    table().reset()


def summary(rows: list[dict[str, Any]], sort: str = "total") -> list[dict[str, Any]]:
    """Rows sorted by ``sort`` (one of SORT_KEYS), largest first."""
    key = _SORT_FIELDS[sort]
    return sorted(rows, key=lambda r: (-r[key], r["route"], r["method"], r["status"]))


ROUTE_COLUMNS: list[Column[Mapping[str, Any]]] = [
    Column.field("route", "route", align="left"),
    Column.field("method", "method", align="left"),
    Column.field("status", "status", align="left"),
    Column.field("count", "count"),
    Column.field("errors", "errors"),
    *(Column.field(f"{p} ms", f"{p}_ns", format_ms)
      for p in ("p50", "p90", "p95", "p99", "max", "total", "cpu")),
    Column.field("bytes out", "bytes_out"),
]


def format_table(rows: list[dict[str, Any]], sort: str = "total") -> str:
    """An aligned text table of route statistics (times in ms)."""
    if not rows:
        return "no requests recorded\n"
    return render(ROUTE_COLUMNS, summary(rows, sort))
