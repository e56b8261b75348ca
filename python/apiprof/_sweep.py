"""`apiprof bench --sweep`: open-model load stepped up to saturation. Each step is one run
of apiprof-load (which measures: corrected latency histograms per URL, errors by kind);
this module chooses the rates, reads the server's CPU from /proc around each step, and
finds the saturation point, the knee and, with a profile, what grew per request."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _bench_result as bench_result
from . import _core
from ._output import output_path
from ._table import Column, format_ns, render_lines
from .errors import UsageError

DEFAULT_SLO = "p99=200ms"
SUSTAINED = 0.95          # achieved / offered at or above this: the step is sustained
MAX_ERROR_SHARE = 0.01    # failed + 5xx over ended requests at or below this
FAILED_STEPS_TO_STOP = 2  # the sweep ends after this many steps in a row failed
CLIENT_CPU_SHARE = 0.85   # apiprof-load's CPU over wall x threads at or above this: CPU-bound
SERVER_CPU_SHARE = 0.85   # the server's CPU over wall at or above this: one core busy
CONN_SHARE = 0.8          # requests in flight over connections at or above this: exhausted
AUTO_START = 10.0         # --sweep auto: first rate, doubled until a step fails
AUTO_MAX_STEPS = 12
MAX_STEPS = 31            # apiprof run's phase names: two per step, 64 at most
GROWN_TOP = 8


@dataclass(frozen=True)
class Slo:
    name: str          # "p99"
    percentile: float  # 99.0
    ms: float          # 200.0

    def __str__(self) -> str:
        return f"{self.name}={self.ms:g}ms"


def parse_slo(text: str) -> Slo:
    """``p99=200ms``, ``p99.9=1s``, ``p50=20`` (ms when no unit)."""
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)=(\d+(?:\.\d+)?)(ms|s|us)?", text.strip())
    if m is None or not 0 < float(m.group(1)) <= 100 or float(m.group(2)) <= 0:
        raise UsageError(f"--slo wants pNN=DURATION (e.g. {DEFAULT_SLO}), got {text!r}")
    scale = {"s": 1000.0, "us": 0.001}.get(m.group(3) or "ms", 1.0)
    return Slo(f"p{m.group(1)}", float(m.group(1)), float(m.group(2)) * scale)


def parse_range(text: str) -> list[float] | None:
    """The rates of ``START:STOP:STEP`` (requests/s), or None for ``auto``."""
    if text == "auto":
        return None
    parts = text.split(":")
    try:
        start, stop, step = (float(p) for p in parts) if len(parts) == 3 else (0.0, 0.0, 0.0)
    except ValueError:
        start = stop = step = 0.0
    if not (start > 0 and stop >= start and step > 0):
        raise UsageError(f"--sweep wants START:STOP:STEP in requests/s (e.g. 20:200:20) or "
                         f"auto, got {text!r}")
    n = int((stop - start) / step + 1e-9) + 1
    if n > MAX_STEPS:
        raise UsageError(f"--sweep {text}: {n} steps, at most {MAX_STEPS}")
    return [round(start + i * step, 6) for i in range(n)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", metavar="START:STOP:STEP",
                   help="open model stepped from START to STOP requests/s (or 'auto'): "
                        "saturation point, knee, per route")
    p.add_argument("--slo", metavar="pNN=DURATION", default=DEFAULT_SLO,
                   help=f"with --sweep: the latency objective ({DEFAULT_SLO})")
    p.add_argument("--settle", metavar="SECONDS", type=float, default=2.0,
                   help="with --sweep: unmeasured seconds before each step (2)")
    p.add_argument("--replay", metavar="LOG", help="send the requests of an access log "
                   "(uvicorn, Common/Combined, JSON lines) at their logged times; with -R or "
                   "--sweep, as the mix")
    p.add_argument("--speed", metavar="X", help="--replay in time X times as fast (1)")
    p.add_argument("--bodies", metavar="FILE", help="--replay: request bodies by method and "
                   "path (JSON rules, docs/load.md)")


def replay_targets(args: argparse.Namespace, base: str | None) -> list[str]:
    """apiprof-load's arguments for --replay (its log, --speed, --bodies and the origin)."""
    if args.url or args.urls:
        raise UsageError("--replay takes its requests from the log: no URL or --urls")
    if base is None:
        raise UsageError("--replay needs --base URL (or --app module:app)")
    out = ["--replay", str(Path(args.replay).resolve()), "--base", base]
    if args.speed is not None:
        if getattr(args, "sweep", None) is not None:
            raise UsageError("--speed scales a replay in time; --sweep sets the rate")
        out.append(f"--speed={args.speed}")
    if args.bodies is not None:
        out.append(f"--bodies={Path(args.bodies).resolve()}")
    return out


# ---- CPU from /proc ------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """pid and its descendants, but the sampler (apiprof-spy under apiprof run --sample:
    its CPU is the profiler's, not the server's)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "apiprof-spy":
                continue
        except OSError:
            continue
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (now alive), from
    /proc/PID/stat; 0 for a process that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _descendants(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])   # utime, stime (fields 14, 15)
    return total / tick


# ---- one step ------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    load: dict[str, Any]
    client_cpu_s: float
    server_cpu_s: float | None
    wall_s: float
    phase: str         # the step's phase in the profile (step-N, N in run order)
    rows: list[dict[str, Any]] = field(default_factory=list)   # per route
    overall: dict[str, Any] = field(default_factory=dict)


def _hist(stats: dict[str, Any], key: str) -> Any:
    enc = stats.get("histograms", {}).get(key)
    return None if enc is None else _core.Histogram.decode(base64.b64decode(enc))


def figures(stats: dict[str, Any], elapsed: float, offered: float | None,
            slo: Slo) -> dict[str, Any]:
    """The sweep's figures of one STATS object (docs/load.md) with its histograms."""
    lat = _hist(stats, "latency")
    unc = _hist(stats, "uncorrected")
    ended = stats["requests"] + stats["failed"]
    issued = ended + stats["unfinished"]
    if offered is None:
        offered = issued / elapsed if elapsed > 0 else 0.0
    fives = sum(v for k, v in stats["status"].items() if k.startswith("5"))
    achieved = stats["requests"] / elapsed if elapsed > 0 else 0.0
    slo_ms = lat.percentile(slo.percentile) / 1e6 if lat is not None and lat.count else None
    error_share = (stats["failed"] + fives) / ended if ended else 0.0
    ok = (offered > 0 and achieved >= SUSTAINED * offered and slo_ms is not None
          and slo_ms <= slo.ms and error_share <= MAX_ERROR_SHARE)
    return {
        "offered_rps": round(offered, 3), "achieved_rps": round(achieved, 3),
        "requests": stats["requests"], "failed": stats["failed"], "errors": stats["errors"],
        "http_5xx": fives, "unfinished": stats["unfinished"],
        "slo_ms": None if slo_ms is None else round(slo_ms, 3),
        "p50_ms": stats["latency_ms"].get("p50") if lat is not None and lat.count else None,
        "p99_ms": stats["latency_ms"].get("p99") if lat is not None and lat.count else None,
        "uncorrected_p50_ms": None if unc is None or not unc.count
        else round(unc.percentile(50) / 1e6, 3),
        "uncorrected_mean_ms": None if unc is None or not unc.count else round(unc.mean / 1e6, 3),
        "ok": ok,
    }


def route_stats(load: dict[str, Any],
                matches: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """STATS rows per route (with --app: grouped by route template; else per URL), each
    with merged histograms."""
    phase = load["phases"]["warm"]
    if matches is None:
        return [dict(u) for u in phase["urls"]]
    groups: dict[str, dict[str, Any]] = {}
    for url, found in zip(phase["urls"], matches, strict=True):
        _, name = bench_result.row_name(url, found)
        g = groups.setdefault(name, {"name": name, "requests": 0, "failed": 0, "unfinished": 0,
                                     "status": {}, "errors": {}, "latency_ms": {},
                                     "_lat": _core.Histogram(), "_unc": _core.Histogram()})
        for k in ("requests", "failed", "unfinished"):
            g[k] += url[k]
        for k in ("status", "errors"):
            for key, v in url[k].items():
                g[k][key] = g[k].get(key, 0) + v
        for k, h in (("latency", "_lat"), ("uncorrected", "_unc")):
            got = _hist(url, k)
            if got is not None:
                g[h].merge(got)
    out = []
    for g in groups.values():
        lat, unc = g.pop("_lat"), g.pop("_unc")
        g["latency_ms"] = ({"p50": round(lat.percentile(50) / 1e6, 3),
                            "p99": round(lat.percentile(99) / 1e6, 3)} if lat.count else {})
        g["histograms"] = {k: base64.b64encode(h.encode()).decode() if h.count else None
                           for k, h in (("latency", lat), ("uncorrected", unc))}
        out.append(g)
    return out


# ---- analysis ------------------------------------------------------------------------


def knee(points: list[tuple[float, float]]) -> int | None:
    """Index of the knee of a latency-vs-throughput curve: the point farthest below the
    chord from the first point to the last, both axes scaled to [0, 1] (the largest
    x - y once scaled). None with fewer than three points or a flat curve."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    dx, dy = max(xs) - min(xs), max(ys) - min(ys)
    if dx <= 0 or dy <= 0:
        return None
    dist = [(x - min(xs)) / dx - (y - min(ys)) / dy for x, y in points]
    best = max(range(len(points)), key=lambda i: dist[i])
    return best if 0 < best < len(points) - 1 and dist[best] > 0 else None


def saturation(steps: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """(index of the highest sustained step below the first failed one, index of the
    first failed step); None for either when there is none."""
    first_fail = next((i for i, s in enumerate(steps) if not s["ok"]), None)
    below = steps if first_fail is None else steps[:first_fail]
    best = max((i for i, s in enumerate(below) if s["ok"]), default=None)
    return best, first_fail


def limit_of(step: Step, base: Step, connections: int, threads: int) -> dict[str, Any]:
    """What limited a failed step: the client's CPU, its connections, the server's CPU,
    or the server otherwise (its latency grew: a lock, a pool, I/O)."""
    wall = step.wall_s
    o, b = step.overall, base.overall
    client = step.client_cpu_s / (wall * threads) if wall > 0 else 0.0
    if client >= CLIENT_CPU_SHARE:
        return {"kind": "client_cpu", "text": f"the client: apiprof-load was CPU-bound "
                f"({client:.0%} of its {threads} threads)"}
    in_flight = o["achieved_rps"] * (o["uncorrected_mean_ms"] or 0.0) / 1e3
    server_latency_flat = (o["uncorrected_p50_ms"] is not None
                           and b["uncorrected_p50_ms"] is not None
                           and o["uncorrected_p50_ms"] <= 2 * b["uncorrected_p50_ms"] + 1.0)
    if in_flight >= CONN_SHARE * connections and server_latency_flat:
        return {"kind": "client_connections", "text": f"the client: its {connections} "
                f"connections were all busy (~{in_flight:.1f} requests in flight; the "
                "server's own latency stayed flat): raise -c"}
    if step.server_cpu_s is not None and wall > 0:
        cpu = step.server_cpu_s / wall
        if cpu >= SERVER_CPU_SHARE:
            return {"kind": "server_cpu", "text": f"the server's CPU ({cpu:.0%} of a core)"}
        return {"kind": "server", "text": f"the server, not its CPU ({cpu:.0%} of a core): "
                "requests queued inside it (a lock, a pool, or waits)"}
    return {"kind": "server", "text": "the server (its latency grew)"}


def analyse(steps: list[Step], connections: int, threads: int) -> dict[str, Any]:
    overall = [s.overall for s in steps]
    best, first_fail = saturation(overall)
    limit = (limit_of(steps[first_fail], steps[0], connections, threads)
             if first_fail is not None else
             {"kind": "range", "text": f"the top of the range ({steps[-1].rate:g} req/s)"})
    app_saturated = first_fail is not None and limit["kind"] in ("server", "server_cpu")
    k = knee([(o["achieved_rps"], o["slo_ms"] or 0.0) for o in overall])
    routes: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["name"] for s in steps for r in s.rows):
        seq = [next((r for r in s.rows if r["name"] == name), None) for s in steps]
        present = [(i, r) for i, r in enumerate(seq) if r is not None]
        rb, rf = saturation([r for _, r in present])
        rk = knee([(r["achieved_rps"], r["slo_ms"] or 0.0) for _, r in present])
        routes[name] = {
            "saturation_rps": None if rb is None else present[rb][1]["achieved_rps"],
            "first_failed_step": None if rf is None else present[rf][0],
            "knee_rps": None if rk is None else present[rk][1]["achieved_rps"],
        }
    return {
        "saturation_step": best if app_saturated else None,
        "saturation_rps": steps[best].rate if app_saturated and best is not None else None,
        "sustained_rps": None if best is None else steps[best].rate,
        "first_failed_step": first_fail,
        "limit": limit,
        "knee_step": k,
        "knee_rps": None if k is None else overall[k]["achieved_rps"],
        "routes": routes,
    }


# ---- what grew (profile phases) ------------------------------------------------------

GROWN_WAITS = ("wait_network_ns", "wait_database_ns", "wait_file_ns", "wait_sleep_ns",
               "wait_subprocess_ns", "wait_lock_ns", "wait_gil_ns", "wait_thread_pool_ns")


def per_request(functions: list[dict[str, Any]], requests: int) -> dict[tuple[str, str], float]:
    """(function, metric) -> value per request: self time and wait kinds of every function
    but the idle ones (a worker waiting for work). Await time is left out: every frame of
    an await chain carries the same, so it would fill the list with one wait."""
    out: dict[tuple[str, str], float] = {}
    for f in functions:
        if f.get("class") == "idle":
            continue
        where = f"{f['file']}:{f['line']}({f['qualname']})" if f["file"] else f["qualname"]
        for m in ("self_ns", *GROWN_WAITS):
            v = f.get(m, 0)
            if v:
                out[(where, m)] = out.get((where, m), 0.0) + v / max(requests, 1)
    return out


def what_grew(profile_file: Path, low: tuple[str, int],
              high: tuple[str, int]) -> list[dict[str, Any]]:
    """Per-request totals by (function, metric) of two phases and the largest growths.
    A wait kind is inclusive (every caller of a waiting frame carries it): of the rows of
    one wait kind whose growths are within 5% of each other only the innermost function
    (least total time) stays.
    A small comparison of two function tables, until the differential engine of
    ``apiprof diff`` can be called here."""
    whole = _core.load(str(profile_file))
    high_functions = list(whole.select({"phase": high[0]}).functions())
    a = per_request(list(whole.select({"phase": low[0]}).functions()), low[1])
    b = per_request(high_functions, high[1])
    total = {f"{f['file']}:{f['line']}({f['qualname']})" if f["file"] else f["qualname"]:
             f["total_ns"] for f in high_functions}
    rows = [{"function": k[0], "metric": k[1], "low_ns": round(a.get(k, 0.0)),
             "high_ns": round(v), "growth_ns": round(v - a.get(k, 0.0))}
            for k, v in b.items() if v > a.get(k, 0.0)]
    rows.sort(key=lambda r: (-r["growth_ns"], r["function"], r["metric"]))
    kept: list[dict[str, Any]] = []
    for r in rows:
        # a wait inclusive of the one kept before it (same metric, growth within 5%):
        # the innermost of the two (least total time) stays
        same = next((k for k in kept if k["metric"] == r["metric"] and r["metric"] != "self_ns"
                     and r["growth_ns"] >= 0.95 * k["growth_ns"]), None)
        if same is None:
            kept.append(r)
        elif total.get(r["function"], 0) < total.get(same["function"], 0):
            kept[kept.index(same)] = r
    out = sorted(kept, key=lambda r: (-r["growth_ns"], r["function"], r["metric"]))
    return out[:GROWN_TOP]


# ---- the driver ----------------------------------------------------------------------


@dataclass
class Driver:
    binary: Path
    load_opts: list[str]
    targets: list[str]
    duration: float
    settle: float
    slo: Slo
    connections: int
    threads: int
    server_pid: int | None = None
    profile_pid: int | None = None      # the apiprof run process to signal per phase
    matches: list[dict[str, Any]] | None = None
    tmp: Path = Path(".")
    said: set[str] = field(default_factory=set)   # apiprof-load's notes, each said once

    def run_load(self, cmd: list[str], name: str) -> tuple[int, Any]:
        """Runs apiprof-load: (exit code, its rusage). Its notes on stderr (a replayed
        log's skipped lines, its grouping) are the same at every step: each is passed on
        once."""
        err = self.tmp / f"{name}.err"
        with open(err, "w") as err_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here
        for line in err.read_text(errors="replace").splitlines():
            if line not in self.said:
                self.said.add(line)
                print(line, file=sys.stderr)
        return os.waitstatus_to_exitcode(status), usage

    def step(self, rate: float, index: int) -> Step:
        out = self.tmp / f"step{index}.json"
        gate = ["--phase-signal", str(self.profile_pid)] if self.profile_pid else []
        cmd = [str(self.binary), *self.load_opts, f"--rate={rate:g}",
               f"--duration={self.duration:g}", f"--warmup={self.settle:g}", "--histograms",
               "--no-progress", "--json", f"--json-out={out}", *gate, *self.targets]
        cpu0 = None if self.server_pid is None else process_cpu_s(self.server_pid)
        t0 = time.monotonic()
        code, usage = self.run_load(cmd, f"step{index}")
        if code != 0:
            raise SweepError(f"apiprof-load failed at {rate:g} req/s (exit code {code})")
        load = json.loads(out.read_text())
        warm = load["phases"]["warm"]
        # The server's CPU over the whole run of the step, settle included: the share
        # of a core is taken over the same wall time.
        wall = time.monotonic() - t0
        server = None if cpu0 is None else process_cpu_s(self.server_pid or 0) - cpu0
        st = Step(rate, load, usage.ru_utime + usage.ru_stime, server, wall, f"step-{index + 1}")
        st.overall = figures(warm, warm["elapsed_s"], rate, self.slo)
        st.rows = [{"name": r["name"], **figures(r, warm["elapsed_s"], None, self.slo)}
                   for r in route_stats(load, self.matches)]
        if self.profile_pid:   # the next settle is a phase of its own
            os.kill(self.profile_pid, signal.SIGUSR1)
        return st

    def rates_auto(self) -> list[float]:
        return [AUTO_START * 2 ** i for i in range(AUTO_MAX_STEPS)]


class SweepError(Exception):
    """The sweep could not go on (apiprof-load failed)."""


def phase_names(n: int) -> list[str]:
    """apiprof run's phases for n steps: settle-1, step-1, settle-2, step-2, ..."""
    return [name for i in range(1, n + 1) for name in (f"settle-{i}", f"step-{i}")]


def progress_line(st: Step, index: int, total: int | None) -> str:
    o = st.overall
    cpu = "" if st.server_cpu_s is None else f"  server CPU {st.server_cpu_s / st.wall_s:.0%}"
    slo = "-" if o["slo_ms"] is None else f"{o['slo_ms']:.1f}ms"
    of = f"/{total}" if total else ""
    return (f"step {index + 1}{of}: {st.rate:g} req/s offered, {o['achieved_rps']:.1f} "
            f"achieved, SLO latency {slo}, failed {o['failed']}{cpu}  "
            f"{'ok' if o['ok'] else 'NOT sustained'}")


def sweep(driver: Driver, rates: list[float] | None, log: Any) -> list[Step]:
    steps: list[Step] = []
    fails = 0
    plan = rates if rates is not None else driver.rates_auto()
    for i, rate in enumerate(plan):
        st = driver.step(rate, i)
        steps.append(st)
        print(progress_line(st, i, len(plan) if rates is not None else None), file=log,
              flush=True)
        fails = 0 if st.overall["ok"] else fails + 1
        if fails >= FAILED_STEPS_TO_STOP or (rates is None and fails):
            break
    if rates is None and len(steps) >= 2 and not steps[-1].overall["ok"]:
        # auto: two steps between the last sustained rate and the failed one
        lo, hi = steps[-2].rate, steps[-1].rate
        if steps[-2].overall["ok"]:
            for r in (lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3):
                st = driver.step(round(r, 1), len(steps))
                steps.append(st)
                print(progress_line(st, len(steps) - 1, None), file=log, flush=True)
            steps.sort(key=lambda s: s.rate)
    return steps


def _ms(v: float | None) -> str:
    return "-" if v is None else format_ns(v * 1e6)


STEP_COLUMNS: list[Column[tuple[Step, str]]] = [
    Column("offered", lambda t: f"{t[0].rate:g}"),
    Column("achieved", lambda t: f"{t[0].overall['achieved_rps']:.1f}"),
    Column("p50", lambda t: _ms(t[0].overall["p50_ms"])),
    Column("p99", lambda t: _ms(t[0].overall["p99_ms"])),
    Column("SLO pct", lambda t: _ms(t[0].overall["slo_ms"])),
    Column("failed", lambda t: str(t[0].overall["failed"])),
    Column("5xx", lambda t: str(t[0].overall["http_5xx"])),
    Column("server CPU", lambda t: "-" if t[0].server_cpu_s is None
           else f"{t[0].server_cpu_s / t[0].wall_s:.0%}"),
    Column("client CPU", lambda t: f"{t[0].client_cpu_s / t[0].wall_s:.0%}"),
    Column("", lambda t: t[1], "free"),
]


def conclusion(result: dict[str, Any]) -> list[str]:
    a = result["analysis"]
    slo = result["slo"]
    out = []
    if a["saturation_rps"] is not None:
        out.append(f"saturation point: {a['saturation_rps']:g} req/s (the highest step "
                   f"sustained with {slo} and >= {SUSTAINED:.0%} of the offered rate); "
                   f"limited by {a['limit']['text']}")
    elif a["sustained_rps"] is not None:
        out.append(f"no saturation found up to {a['sustained_rps']:g} req/s: limited by "
                   f"{a['limit']['text']}")
    else:
        out.append(f"no step was sustained with {slo}: limited by {a['limit']['text']}")
    if a["knee_rps"] is not None:
        out.append(f"knee of the latency curve: {a['knee_rps']:.1f} req/s achieved (the step "
                   "farthest below the chord of latency over throughput)")
    for name, r in a["routes"].items():
        sat = ("no step sustained" if r["saturation_rps"] is None
               else f"sustained up to {r['saturation_rps']:.1f} req/s")
        kn = "" if r["knee_rps"] is None else f", knee {r['knee_rps']:.1f} req/s"
        out.append(f"  {name}: {sat}{kn}")
    grew = result.get("grew")
    if grew:
        out.append(f"what grew per request from {grew['low']} to {grew['high']} "
                   f"(every function: apiprof diff {grew['file']} {grew['file']} "
                   f"--phase-a {grew['low']} --phase-b {grew['high']}):")
        for g in grew["rows"]:
            out.append(f"  +{format_ns(g['growth_ns'])}  {g['metric']}  {g['function']}")
    return out


def text(steps: list[Step], result: dict[str, Any]) -> str:
    a = result["analysis"]
    marks = []
    for i in range(len(steps)):
        m = []
        if i == a["saturation_step"]:
            m.append("<- saturation")
        if i == a["knee_step"]:
            m.append("<- knee")
        marks.append(" ".join(m))
    lines = render_lines(STEP_COLUMNS, list(zip(steps, marks, strict=True)))
    return "\n".join([*lines, "", *conclusion(result)])


def result_of(steps: list[Step], analysis: dict[str, Any], slo: Slo, args: Any,
              grew: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "tool": "apiprof-bench", "schema": 1, "app": args.app,
        "sweep": {"slo": str(slo), "duration_s": args.duration_s, "settle_s": args.settle,
                  "steps": [{"rate": s.rate, "client_cpu_s": round(s.client_cpu_s, 3),
                             "server_cpu_s": None if s.server_cpu_s is None
                             else round(s.server_cpu_s, 3), "wall_s": round(s.wall_s, 3),
                             "overall": s.overall, "routes": s.rows} for s in steps]},
        "slo": str(slo), "analysis": analysis, "grew": grew,
    }


def chart_of(steps: list[Step], result: dict[str, Any], title: str) -> dict[str, Any]:
    """What the C writer of the chart and the page reads (apiprof._core.write_sweep)."""
    a = result["analysis"]
    slo = parse_slo(result["slo"])
    return {
        "title": title, "slo": result["slo"], "slo_limit_ms": slo.ms,
        "saturation": a["saturation_step"], "knee": a["knee_step"],
        "conclusion": "\n".join(conclusion(result)),
        "steps": [{"offered": s.rate, "achieved": s.overall["achieved_rps"],
                   "slo_ms": s.overall["slo_ms"], "p50_ms": s.overall["p50_ms"],
                   "failed": s.overall["failed"], "ok": s.overall["ok"],
                   "server_cpu": None if s.server_cpu_s is None or s.wall_s <= 0
                   else s.server_cpu_s / s.wall_s} for s in steps],
    }


def chart_meta(chart: dict[str, Any]) -> dict[str, str]:
    """The chart as the profile's metadata (docs/format.md, "sweep_*"): the HTML report of
    the sweep's profile shows it (src/core/ap_sweep.c, ap_sweep_from_meta)."""
    def num(v: Any) -> str:
        return "-1" if v is None else f"{float(v):.6g}"

    rows = [" ".join([num(s["offered"]), num(s["achieved"]), num(s["slo_ms"]),
                      num(s["p50_ms"]), num(s["failed"]), num(s["server_cpu"]),
                      "1" if s["ok"] else "0"]) for s in chart["steps"]]
    return {"sweep_steps": ";".join(rows), "sweep_title": chart["title"] or "",
            "sweep_slo": chart["slo"], "sweep_slo_limit_ms": num(chart["slo_limit_ms"]),
            "sweep_saturation": num(chart["saturation"]), "sweep_knee": num(chart["knee"]),
            "sweep_conclusion": chart["conclusion"]}


def keep_in_profile(profile: Path, chart: dict[str, Any]) -> None:
    """Write the chart into the sweep's profile, so that its HTML report has it."""
    prof = _core.load(str(profile))
    for key, value in chart_meta(chart).items():
        prof.set_meta(key, value)
    prof.save(str(profile))


def chart_paths(output: str) -> tuple[Path, Path]:
    """The page and the chart beside the result: FILE.html and FILE.svg (-o FILE.json)."""
    out = Path(output)
    if out.suffix in (".html", ".svg"):
        out = out.with_name(out.name + ".sweep")
    return out.with_suffix(".html"), out.with_suffix(".svg")


def write(result: dict[str, Any], output: str, steps: list[Step], title: str,
          profile: Path | None = None) -> list[Path]:
    """The result (JSON), then its page and chart when -o is a regular path; the chart
    also goes into the sweep's profile, when there is one."""
    chart = chart_of(steps, result, title)
    if profile is not None:
        keep_in_profile(profile, chart)
    with output_path(output) as path:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
    if not Path(output).is_file():
        return []   # /dev/stdout and the like: the JSON only
    written = []
    for fmt, target in zip(("html", "svg"), chart_paths(output), strict=True):
        with output_path(str(target)) as path:
            _core.write_sweep(fmt, path, chart)
        written.append(target)
    return written


def make_tmp() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="apiprof-sweep-")


def log_stream() -> Any:
    return sys.stderr
