"""The result of ``apiprof bench --app``: load figures per route (merged exactly from the
histograms apiprof-load writes with --histograms), the profile's phases lined up with
them, and the text summary."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _core
from ._profiler import format_table, location
from ._table import Column, format_ns, render_lines

PHASES = ("warm", "cold")
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
TOP_FUNCTIONS = 15


class ResultError(Exception):
    """The routes or the profile could not be read."""


def request_of(url: dict[str, Any]) -> tuple[str, str]:
    """(method, path) of an apiprof-load URL row, the path percent-decoded as a server
    puts it in the ASGI scope."""
    method = url["name"].split(" ", 1)[0]
    return method, urllib.parse.unquote(urllib.parse.urlsplit(url["url"]).path)


def row_name(url: dict[str, Any], found: dict[str, Any]) -> tuple[str, str]:
    """(method, row name) of an apiprof-load URL row once routed: the route template when
    the app routes it; else its path, or for a row of a replayed log grouped by path
    pattern the row's own name (``GET /items/{id}``, ``<other>``)."""
    method, path = request_of(url)
    if url["name"] == "<other>":
        return "", url["name"]
    if found["route"] is not None:
        return method, f"{method} {found['route']}"
    return method, url["name"] if url.get("grouped") else f"{method} {path}"


def match_routes(app: str, app_dir: Path, requests: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Route template and endpoint of each request, from ``python -m apiprof._route_match`` run
    in the app's directory (the import happens there, not in this process)."""
    done = subprocess.run([sys.executable, "-m", "apiprof._route_match", app], cwd=app_dir,
                          input=json.dumps(requests), capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ResultError(f"cannot read the routes of {app}: "
                          f"{lines[-1] if lines else f'exit code {done.returncode}'}")
    matches: list[dict[str, Any]] = json.loads(done.stdout)
    return matches


def _hist(encoded: str | None) -> Any:
    return None if encoded is None else _core.Histogram.decode(base64.b64decode(encoded))


def latency_ms(h: Any) -> dict[str, Any]:
    """The LAT object of docs/load.md from a histogram (what apiprof-load writes)."""
    out: dict[str, Any] = {"count": h.count}
    for key, p in PERCENTILES:
        out[key] = round(h.percentile(p) / 1e6, 3)
    out.update(min=round(h.min / 1e6, 3), max=round(h.max / 1e6, 3), mean=round(h.mean / 1e6, 3))
    return out


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def route_rows(phase: dict[str, Any], matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, route): the URL rows of the phase that the app routes there,
    summed; latency histograms merged (exact: bucket-wise)."""
    groups: dict[str, dict[str, Any]] = {}
    for url, found in zip(phase["urls"], matches, strict=True):
        if url["name"] == "<other>":
            found = {"route": None, "endpoint": None}
        method, name = row_name(url, found)
        g = groups.get(name)
        if g is None:
            ep = found["endpoint"]
            g = groups[name] = {
                "name": name, "method": method, "route": found["route"],
                "endpoint": None if ep is None else
                f"{ep['file']}:{ep['line']}({ep['qualname']})",
                "urls": [], "requests": 0, "status": {}, "errors": {}, "failed": 0,
                "http_errors": 0, "unfinished": 0, "bytes_received": 0, "bytes_sent": 0,
                "_lat": _core.Histogram(), "_unc": None, "_key": ep,
            }
        g["urls"].append(url["name"])
        g["requests"] += url["requests"]
        _add(g["status"], url["status"])
        _add(g["errors"], url["errors"])
        for k in ("failed", "http_errors", "unfinished", "bytes_received", "bytes_sent"):
            g[k] += url[k]
        g["_lat"].merge(_hist(url["histograms"]["latency"]))
        unc = _hist(url["histograms"]["uncorrected"])
        if unc is not None:
            if g["_unc"] is None:
                g["_unc"] = _core.Histogram()
            g["_unc"].merge(unc)
    rows = []
    elapsed = phase["elapsed_s"]
    for g in groups.values():
        g["rps"] = round(g["requests"] / elapsed, 3) if elapsed > 0 else 0.0
        g["latency_ms"] = latency_ms(g.pop("_lat"))
        unc = g.pop("_unc")
        g["uncorrected_latency_ms"] = None if unc is None else latency_ms(unc)
        rows.append(g)
    return rows


def _figures(f: dict[str, Any]) -> dict[str, Any]:
    keys = ("calls", "primitive_calls", "self_ns", "total_ns", "await_ns")
    return {"function": location(f), **{k: f[k] for k in keys}}


def line_up(rows: list[dict[str, Any]], functions: list[dict[str, Any]]) -> None:
    """Give each route row the figures of its endpoint in the phase's profile
    (``profile``: calls, self/total/await ns; None when the endpoint never ran)."""
    by_key = {(f["file"], f["line"], f["qualname"]): f for f in functions}
    for row in rows:
        key = row.pop("_key")
        f = None if key is None else by_key.get((key["file"], key["line"], key["qualname"]))
        row["profile"] = None if f is None else _figures(f)


def by_self_time(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Largest self time first: where the window's time went (cumulative time would put
    the event loop and idle worker threads first, open across the whole window)."""
    return sorted(functions, key=lambda f: (-f["self_ns"], -f["total_ns"], location(f)))


def build(load: dict[str, Any], matches: list[dict[str, Any]], profile_file: Path | None,
          mode: str | None) -> tuple[dict[str, Any], dict[str, Any] | None,
                                     list[dict[str, Any]] | None]:
    """(routes, profile, warm functions). ``routes``: {phase: rows or None}; ``profile``:
    None, or the file, its phases and the top functions of the warm phase."""
    functions: dict[str, list[dict[str, Any]]] = {}
    profile: dict[str, Any] | None = None
    if profile_file is not None:
        if not profile_file.is_file():
            raise ResultError(f"the profiled server wrote no {profile_file}")
        try:
            whole = _core.load(str(profile_file))
        except (OSError, ValueError) as e:
            raise ResultError(f"cannot read {profile_file}: {e}") from None
        for ph in PHASES:
            functions[ph] = list(whole.select({"phase": ph}).functions())
        profile = {
            "mode": mode, "file": str(profile_file), "label": "phase",
            "phases": [ph for ph in ("cold", "warm") if functions[ph]],
            "top": [_figures(f) for f in by_self_time(functions["warm"])[:TOP_FUNCTIONS]],
        }
    routes: dict[str, Any] = {}
    for ph in PHASES:
        phase = load["phases"][ph]
        if phase is None:
            routes[ph] = None
            continue
        rows = route_rows(phase, matches)
        line_up(rows, functions.get(ph, []))
        routes[ph] = rows
    return routes, profile, functions.get("warm")


def _latency(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: format_ns(r["latency_ms"][key] * 1e6) if r["latency_ms"]["count"] else "-"


def _per_call(r: dict[str, Any]) -> str:
    p = r["profile"]
    if p is None:
        return "-"
    return format_ns(p["total_ns"] / p["calls"]) if p["calls"] else "-"


LOAD_COLUMNS: list[Column[dict[str, Any]]] = [
    Column("route", lambda r: r["name"], "left"),
    Column("requests", lambda r: str(r["requests"])),
    Column("req/s", lambda r: f"{r['rps']:.1f}"),
    *(Column(key, _latency(key)) for key in ("p50", "p99", "max")),
    # apiprof-load's accounting (docs/load.md): 4xx/5xx are responses (in the latency),
    # failed requests got none, unfinished ones were in flight when the phase ended.
    Column("4xx/5xx", lambda r: str(r["http_errors"])),
    Column("failed", lambda r: str(r["failed"])),
    Column("unfinished", lambda r: str(r["unfinished"])),
]
PROFILE_COLUMNS: list[Column[dict[str, Any]]] = [
    Column("calls", lambda r: "-" if r["profile"] is None else str(r["profile"]["calls"])),
    Column("cum/call", _per_call),
    Column("endpoint", lambda r: r["endpoint"] or "-", "free"),
]


def summary(result: dict[str, Any], functions: list[dict[str, Any]] | None) -> str:
    """Per-route load figures beside their endpoint's profile, then the warm profile's
    top functions."""
    out: list[str] = []
    profiled = result["profile"] is not None
    columns = LOAD_COLUMNS + PROFILE_COLUMNS if profiled else LOAD_COLUMNS
    for ph in PHASES:
        rows = result["routes"][ph]
        if rows is None:
            continue
        phase = result["load"]["phases"][ph]
        out.append(f"{ph} phase: {phase['requests']} responses in {phase['elapsed_s']:.2f} s, "
                   "per route" + (" (endpoint calls and cumulative time from the profile)"
                                  if profiled else ""))
        out.extend(render_lines(columns, rows))
        out.append("")
    if profiled and functions is not None:
        file = result["profile"]["file"]
        out.append(format_table(functions, "tottime", TOP_FUNCTIONS,
                                header=f"warm profile, the app's functions by self time "
                                       f"(apiprof report {file} --phase warm --all: every "
                                       "function)", everything=False))
    return "\n".join(out)
