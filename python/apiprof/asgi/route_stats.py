"""Route statistics as users read them: this process's table, ``stats()``, ``reset()``,
the sort orders and the text table (``apiprof stats``)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .. import _core
from .._table import Column, format_bytes, format_ms, render
from .stats_files import read_dir

SORT_KEYS = ("total", "p50", "p95", "p99", "max", "cpu", "count", "errors", "stalls",
             "alloc", "live")
_SORT_FIELDS = {"total": "total_ns", "p50": "p50_ns", "p95": "p95_ns", "p99": "p99_ns",
                "max": "max_ns", "cpu": "cpu_ns", "count": "count", "errors": "errors",
                "stalls": "stall_ns", "alloc": "alloc_bytes", "live": "live_bytes"}

_table: _core.RouteTable | None = None
_memory: _core.MemoryTracker | None = None   # the middleware's, once started
_memory_lock = threading.Lock()

# A route is a leak suspect when what its finished requests kept is still alive: at
# least this many bytes per request, over at least this many sampled requests, not
# counting the one request that kept the most (a first use: lazy imports, a cache warmed
# once).
LEAK_BYTES_PER_REQUEST = 1024
LEAK_MIN_REQUESTS = 20


def table(max_keys: int = 256) -> _core.RouteTable:
    """The process's route table (made on first use with ``max_keys``)."""
    global _table
    if _table is None:
        _table = _core.RouteTable(max_keys)
    return _table


def start_request_memory(rate: int) -> bool:
    """Sample the allocations of every HTTP request of this process from now on (the
    middleware's ``memory=True``): each request's allocated and retained bytes go to its
    route's statistics. Once per process (a forked child keeps its parent's); False,
    with one line on stderr, when another allocation hook runs (``apiprof run
    --memory``)."""
    global _memory
    with _memory_lock:
        if _memory is not None and _memory.running:
            return True   # this process's, or a forked parent's (the hook lives on)
        tracker = _core.MemoryTracker(None, mode="sampled", rate=rate)
        try:
            tracker.start()
        except RuntimeError as e:
            print(f"apiprof: memory=True: request memory is off in this process: {e}",
                  file=sys.stderr)
            return False
        _memory = tracker
        return True


def stats(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Route statistics as a JSON-able dict: this process's, or, with ``directory``, the
    exact merge of every worker's file in it."""
    if directory is None:
        rows = table().snapshot()
        files = 0
    else:
        merged, paths = read_dir(directory)
        rows, files = merged.snapshot(), len(paths)
    return {"version": 1, "workers": files, "routes": summary(rows),
            "leak_suspects": leak_suspects(rows)}


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


def _per_request(field: str) -> Callable[[Mapping[str, Any]], str]:
    def cell(r: Mapping[str, Any]) -> str:
        n = r.get("mem_requests", 0)
        return format_bytes(r[field] / n) if n else "-"
    return cell


# Shown when the middleware sampled memory (memory=True): estimates, per sampled request.
MEMORY_COLUMNS: list[Column[Mapping[str, Any]]] = [
    Column("alloc/req", _per_request("alloc_bytes")),
    Column("kept/req", _per_request("retained_bytes")),
    Column("live now", lambda r: format_bytes(r.get("live_bytes", 0))),
]


def stall_spread(r: Mapping[str, Any]) -> str:
    """Row r's stalls by duration, the non-empty buckets of its histogram: "<=250:5
    <=500:1" (ms; ">5000:1" for the open last bucket), "-" when it has none."""
    hist = r.get("stall_hist", [])
    cells = [(f"<={le / 1e6:g}" if le is not None else f">{hist[i - 1][0] / 1e6:g}") + f":{n}"
             for i, (le, n) in enumerate(hist) if n]
    return " ".join(cells) or "-"


def stall_site(r: Mapping[str, Any]) -> str:
    """Where row r's stalls were (the watchdog's capture, the most stall time first):
    "stall_app.py:21 pause_loop (6 of 6)", "+1 more" when there are other sites; "-"
    when none was captured."""
    sites = r.get("stall_sites") or []
    if not sites:
        return "-"
    top = sites[0]
    text = (f"{os.path.basename(top['file']) or '?'}:{top['line']} {top['function']} "
            f"({top['stalls']} of {r.get('stalls', top['stalls'])})")
    return text + (f" +{len(sites) - 1} more" if len(sites) > 1 else "")


# Shown when any request's step blocked the event loop for stall_ms or more.
STALL_COLUMNS: list[Column[Mapping[str, Any]]] = [
    Column.field("stalls", "stalls"),
    Column.field("stall max ms", "stall_max_ns", format_ms),
    Column("stalls by ms", stall_spread, align="left"),
    Column("stalled at", stall_site, align="left"),
    Column.field("others held ms", "stall_cost_ns", format_ms),
    Column.field("held up ms", "delayed_ns", format_ms),
]


def waits_per_request(r: Mapping[str, Any], most: int = 3) -> str:
    """Where row r's profiled requests waited, per profiled request, the largest kinds
    first: "database 41.2, network 3.1 (of 12)" (ms; of how many requests), "-" when none
    was profiled."""
    n = r.get("waited", 0)
    if not n:
        return "-"
    waits = sorted(((k, ns) for k, ns in r.get("waits", {}).items() if ns / n >= 5000),
                   key=lambda kv: (-kv[1], kv[0]))   # those that would show as 0.00: left out
    if not waits:
        return f"none (of {n})"
    return ", ".join(f"{k} {format_ms(ns / n)}" for k, ns in waits[:most]) + f" (of {n})"


# Shown when any request was profiled (on demand or slow-request capture, docs/asgi.md):
# its time waiting split by kind (docs/waits.md), per profiled request.
WAIT_COLUMNS: list[Column[Mapping[str, Any]]] = [
    Column("waits/profiled req, ms", waits_per_request, align="left"),
]


def format_table(rows: list[dict[str, Any]], sort: str = "total") -> str:
    """An aligned text table of route statistics (times in ms), with the stall columns
    when any request blocked the event loop, the wait split when any request was
    profiled, the memory columns when any row has sampled requests, and a line per leak
    suspect."""
    if not rows:
        return "no requests recorded\n"
    memory = any(r.get("mem_requests") for r in rows)
    stalls = any(r.get("stalls") for r in rows)
    waited = any(r.get("waited") for r in rows)
    columns = ROUTE_COLUMNS + (STALL_COLUMNS if stalls else []) + (
        MEMORY_COLUMNS if memory else []) + (WAIT_COLUMNS if waited else [])
    text = render(columns, summary(rows, sort))
    for r in leak_suspects(rows):
        text += (f"leak suspect: {r['method']} {r['route']} keeps "
                 f"{format_bytes(kept_per_request(r))} per request: "
                 f"{format_bytes(r['live_bytes'])} allocated by its {r['mem_requests']} "
                 "requests is still alive\n")
    if leak_suspects(rows):
        text += ("  (the line that keeps it: apiprof run --memory -m uvicorn ..., then "
                 "apiprof report FILE --route ROUTE --metric live; docs/memory.md)\n")
    return text


def kept_per_request(r: Mapping[str, Any]) -> float:
    """Bytes alive now per sampled request of row r, leaving out the request that kept
    the most (a first-use cost is not a leak)."""
    n = r.get("mem_requests", 0)
    if n < 2:
        return 0.0
    return max(0, r["live_bytes"] - r["retained_max"]) / (n - 1)


def leak_suspects(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (route, method, status) whose finished requests left at least
    LEAK_BYTES_PER_REQUEST each alive (``kept_per_request``, added to each row), over
    LEAK_MIN_REQUESTS sampled requests or more; most kept first. A route that allocates
    and frees is never one, nor one whose first request alone kept memory."""
    found = [dict(r, kept_per_request=round(kept_per_request(r), 1)) for r in rows
             if r.get("mem_requests", 0) >= LEAK_MIN_REQUESTS
             and kept_per_request(r) >= LEAK_BYTES_PER_REQUEST]
    return sorted(found, key=lambda r: -r["live_bytes"])
