"""The measurements behind ``apiprof bench --save-baseline`` and ``apiprof check``: per-route
latency over repeated rounds (the app served plainly, routes interleaved), and per-route
exact counts per request (calls of chosen functions, database statements, allocated bytes)
from one round under the function tracer."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _bench_result as bench_result
from . import _core
from .commands import bench

# Warm-up requests per route before anything is measured (imports, caches, first connects).
WARMUP_REQUESTS = 5


@dataclass
class Settings:
    """What to load and how much: GET ``paths``; ``rounds`` rounds of ``requests`` requests
    per route (one connection); the chosen ``count`` functions (``module:qualname``);
    ``memory`` adds allocated bytes per request (exact: every block)."""

    app: str
    app_dir: Path
    paths: list[str]
    rounds: int = 5
    requests: int = 20
    count: list[str] = field(default_factory=list)
    memory: bool = False
    timing: bool = True


class MeasureError(Exception):
    """The app or the load generator failed; the message says how, on one line."""


def _serve(settings: Settings, prefix: list[str], tmp: Path) -> bench.AppServer:
    port = bench.free_port()
    cmd = [*prefix, *bench.server_command(settings.app, port, None, tmp / "unused")[1:]]
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=settings.app_dir, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = bench.AppServer(proc, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_ready(settings.paths[0])
    except bench.BenchError as e:
        server.stop()
        raise MeasureError(str(e)) from None
    return server


def _load(server: bench.AppServer, path: str, n: int, tmp: Path,
          extra: list[str] | None = None) -> dict[str, Any]:
    """apiprof-load: exactly ``n`` requests to ``path`` on one connection; its JSON."""
    out = tmp / "load.json"
    cmd = [str(bench.load_binary()), "-c", "1", "-t", "1", "-n", str(n), "--histograms",
           "--no-progress", f"--json-out={out}", *(extra or []), server.url + path]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise MeasureError(f"apiprof-load failed on {path}: "
                           f"{lines[-1] if lines else done.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _warm_url(load: dict[str, Any]) -> dict[str, Any]:
    url: dict[str, Any] = load["phases"]["warm"]["urls"][0]
    if url["failed"] or url["http_errors"]:
        raise MeasureError(f"{url['name']}: {url['failed']} failed requests, "
                           f"{url['http_errors']} 4xx/5xx responses (fix the route or the path)")
    return url


def route_names(settings: Settings) -> dict[str, str]:
    """Path -> route name ("GET /items/{id}") as the app's router resolves it."""
    requests = [("GET", p) for p in settings.paths]
    try:
        matches = bench_result.match_routes(settings.app, settings.app_dir, requests)
    except bench_result.ResultError as e:
        raise MeasureError(str(e)) from None
    names: dict[str, str] = {}
    for path, found in zip(settings.paths, matches, strict=True):
        if found["route"] is None:
            raise MeasureError(f"GET {path}: no route of {settings.app} matches it")
        names[path] = f"GET {found['route']}"
    return names


def timing(settings: Settings, names: dict[str, str], tmp: Path) -> dict[str, dict[str, Any]]:
    """Per route: the median latency of each round (ms) and the merged percentiles. Each
    round is a fresh server process (warmed up first): one process's placement in memory
    and on the cores shifts a sub-millisecond route by up to ~15% for its whole life, so
    rounds of one process would all share one shift and the test would take it for a
    change. Rounds interleave the routes, each starting at a different one, so that a slow
    spell of the machine falls on every route rather than on one."""
    medians: dict[str, list[float]] = {p: [] for p in settings.paths}
    merged = {p: _core.Histogram() for p in settings.paths}
    for r in range(settings.rounds):
        server = _serve(settings, [sys.executable], tmp)
        try:
            for path in settings.paths:
                _load(server, path, WARMUP_REQUESTS, tmp)
            shift = r % len(settings.paths)
            for path in settings.paths[shift:] + settings.paths[:shift]:
                url = _warm_url(_load(server, path, settings.requests, tmp))
                h = _core.Histogram.decode(base64.b64decode(url["histograms"]["latency"]))
                medians[path].append(round(h.percentile(50.0) / 1e6, 4))
                merged[path].merge(h)
        finally:
            server.stop()
    return {names[p]: {"round_p50_ms": medians[p], "latency_ms": bench_result.latency_ms(merged[p])}
            for p in settings.paths}


def _module_matches(file: str, module: str) -> bool:
    stem = module.replace(".", "/")
    return file.endswith(f"/{stem}.py") or file.endswith(f"/{stem}/__init__.py") or \
        file in (f"{stem}.py", f"{stem}/__init__.py")


def calls_of(functions: list[dict[str, Any]], target: str) -> int:
    """Calls of ``module:qualname`` in a function table (0 when it never ran)."""
    module, _, qualname = target.partition(":")
    return sum(f["calls"] for f in functions
               if f["qualname"] == qualname and _module_matches(f["file"], module))


def counts(settings: Settings, names: dict[str, str], tmp: Path,
           profile_out: Path) -> dict[str, dict[str, Any]]:
    """One round under ``apiprof run --queries`` (and ``--memory full`` with memory): per
    route, the calls of each chosen function, the statements and the allocated bytes per
    measured request. The measured requests are cut from the warm-up by the profiler's
    phases (SIGUSR1 after the warm-up), so a first request's lazy work stays out of the
    calls and bytes."""
    prefix = [sys.executable, "-m", "apiprof", "run", "-q", "--queries", "--phases", "cold,warm",
              "--checkpoint-interval", "0", *(["--memory", "full"] if settings.memory else []),
              "-o", str(profile_out.resolve())]
    server = _serve(settings, prefix, tmp)
    measured: dict[str, int] = {}
    try:
        for path in settings.paths:
            _load(server, path, WARMUP_REQUESTS, tmp)
        # apiprof-load's phase gate sends SIGUSR1 (phase warm) before the first measured
        # request; the cold phase holds the warm-up.
        for i, path in enumerate(settings.paths):
            gate = ["--phase-signal", str(server.proc.pid)] if i == 0 else []
            url = _warm_url(_load(server, path, settings.requests, tmp, gate))
            measured[path] = url["requests"]
    finally:
        code = server.stop()
    if code not in (0, -signal.SIGINT, -signal.SIGTERM) or not profile_out.is_file():
        raise MeasureError(f"the profiled app exited with code {code}: {server.tail()}")
    whole = _core.load(str(profile_out))
    warm = whole.select({"phase": "warm"})
    # The statement table is one for the whole run (not split by phase): statements per
    # request are over every request of the route, warm-up included.
    served = {r["route"]: r["requests"] for r in whole.routes()}
    queries = whole.queries()
    out: dict[str, dict[str, Any]] = {}
    for path in settings.paths:
        name = names[path]
        n = measured[path]
        route = warm.select({"route": name})
        functions = route.functions()
        row: dict[str, Any] = {
            "requests": n,
            "queries": sum(q["count"] for q in queries if q["route"] == name)
            / max(served.get(name, 0), 1),
            "calls": {t: calls_of(functions, t) / n for t in settings.count},
        }
        if settings.memory:
            row["alloc_bytes"] = sum(f.get("alloc_bytes", 0) for f in functions) / n
        out[name] = row
    return out


def measure(settings: Settings, profile_out: Path) -> dict[str, Any]:
    """Every route's measurements: {"routes": {name: {...}}}; the tracer's profile of the
    counting round is written to ``profile_out``."""
    names = route_names(settings)
    if len(set(names.values())) != len(names):
        raise MeasureError("two paths reach the same route; give one path per route")
    with tempfile.TemporaryDirectory(prefix="apiprof-check-") as tmp_name:
        tmp = Path(tmp_name)
        times = timing(settings, names, tmp) if settings.timing else {}
        exact = counts(settings, names, tmp, profile_out)
    routes = {name: {"path": path, **times.get(name, {}), **exact[name]}
              for path, name in names.items()}
    return {"routes": routes}
