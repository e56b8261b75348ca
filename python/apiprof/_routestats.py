"""Route statistics of this process and of the per-worker files in a stats directory.

Each worker process writes its table (the C encoding of src/core/ap_routes.h) to
``DIR/apiprof-routes-<host>-<pid>.bin``, replacing the file atomically; readers merge
every such file in DIR. A dead worker's file keeps its final figures, so totals over a
deployment stay exact across restarts; start from an empty directory to start afresh.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from . import _core

FILE_PREFIX = "apiprof-routes-"
FILE_SUFFIX = ".bin"
SORT_KEYS = ("total", "p95", "count", "errors")

_table: _core.RouteTable | None = None


def table(max_keys: int = 256) -> _core.RouteTable:
    """The process's route table (made on first use with ``max_keys``)."""
    global _table
    if _table is None:
        _table = _core.RouteTable(max_keys)
    return _table


def worker_file(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / f"{FILE_PREFIX}{socket.gethostname()}-{os.getpid()}{FILE_SUFFIX}"


def write_worker_file(directory: str | os.PathLike[str]) -> Path:
    """Writes this process's table to its file in ``directory`` (atomic replace)."""
    path = worker_file(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(table().encode())
    os.replace(tmp, path)
    return path


def read_dir(directory: str | os.PathLike[str]) -> tuple[_core.RouteTable, list[Path]]:
    """Merges every worker file in ``directory``. Raises OSError if it cannot be read and
    ValueError naming the file if one is corrupt."""
    merged = _core.RouteTable(1_000_000)
    files = sorted(
        p for p in Path(directory).iterdir()
        if p.name.startswith(FILE_PREFIX) and p.name.endswith(FILE_SUFFIX)
    )
    for path in files:
        try:
            merged.merge(path.read_bytes())
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return merged, files


def summary(rows: list[dict[str, Any]], sort: str = "total") -> list[dict[str, Any]]:
    """Rows sorted by ``sort`` (one of SORT_KEYS), largest first."""
    key = {"total": "total_ns", "p95": "p95_ns", "count": "count", "errors": "errors"}[sort]
    return sorted(rows, key=lambda r: (-r[key], r["route"], r["method"], r["status"]))


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.2f}"


def format_table(rows: list[dict[str, Any]], sort: str = "total") -> str:
    """An aligned text table of route statistics (times in ms)."""
    head = ("route", "method", "status", "count", "errors", "p50 ms", "p90 ms", "p95 ms",
            "p99 ms", "max ms", "total ms", "cpu ms", "bytes out")
    body = [
        (r["route"], r["method"], r["status"], str(r["count"]), str(r["errors"]),
         _ms(r["p50_ns"]), _ms(r["p90_ns"]), _ms(r["p95_ns"]), _ms(r["p99_ns"]),
         _ms(r["max_ns"]), _ms(r["total_ns"]), _ms(r["cpu_ns"]), str(r["bytes_out"]))
        for r in summary(rows, sort)
    ]
    if not body:
        return "no requests recorded\n"
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = []
    for row in [head, *body]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
