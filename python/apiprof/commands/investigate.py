"""``apiprof investigate``: the whole workflow on an app, in one command.

1. traffic: a --urls file, or the app's GET routes from its OpenAPI schema;
2. pass 1: ``apiprof bench --app --profile trace``: the app under the function tracer
   (every allocation and database statement too, by default), cold then warm load,
   the routes ranked;
3. the findings of the warm phase; the app's functions behind the slow routes (the hot
   functions: cumulative time inside them, library calls included);
4. pass 2: ``apiprof lines`` on those functions under the same traffic;
5. one HTML report (opens on the findings) and its JSON, the line report, the findings
   of both passes printed and written;
6. with --sweep: ``apiprof bench --sweep`` under the tracer, the saturation point and what
   grew per request on the way to it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import _core
from .._findings import format_findings
from .._profile_file import load_profile
from ..errors import UsageError

START_TIMEOUT_S = 30.0
LINE_TARGETS = 3
SWEEP_STEP_S = 1.0      # the sweep of investigate is short: 1 s per step after 0.5 s
SWEEP_SETTLE_S = 0.5
SWEEP_CONNECTIONS = 64  # enough that the client's connections do not end the sweep first


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "investigate", help="profile an app end to end and write down what stands out",
        description="Start an ASGI app, drive traffic at it (cold, then warm) under the function "
                    "tracer, rank its routes, line-profile the functions behind the slow ones "
                    "in a second pass, and write one HTML report that opens on the findings, "
                    "with its JSON and the line report.",
    )
    p.add_argument("--app", required=True, metavar="MODULE:APP", help="the ASGI app to start")
    p.add_argument("--app-dir", default=".", metavar="DIR", help="its working directory")
    p.add_argument("--urls", metavar="FILE", help="weighted traffic (docs/load.md); default: "
                   "the app's GET routes from its OpenAPI schema")
    p.add_argument("-d", "--duration", type=float, default=10.0, metavar="SECONDS",
                   help="seconds of load of each pass (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS",
                   help="seconds of the cold phase before the measured one (default 2)")
    p.add_argument("-c", "--connections", type=int, default=8, help="connections (default 8)")
    p.add_argument("--health", metavar="PATH", help="path polled until the app answers "
                   "(default: the first URL of the traffic)")
    p.add_argument("--top", type=int, default=LINE_TARGETS, metavar="N",
                   help=f"functions to line-profile (default {LINE_TARGETS}; 0: no second pass)")
    p.add_argument("--memory", choices=["full", "sampled", "off"], default="full",
                   help="allocations of pass 1, for the leak and allocation findings (default "
                        "full: exact, as a run of seconds needs; docs/memory.md)")
    p.add_argument("--no-queries", dest="queries", action="store_false",
                   help="pass 1 without the database statement capture (docs/waits.md)")
    p.add_argument("--sweep", metavar="START:STOP:STEP",
                   help="also step the load up to saturation ('auto' finds the range): the "
                        "saturation point and what grows (docs/load.md)")
    p.add_argument("--slo", default="p99=200ms", metavar="pNN=DURATION",
                   help="with --sweep: the latency objective (default p99=200ms)")
    p.add_argument("--baseline", metavar="FILE",
                   help="the bench.apiprof of an earlier investigate (before a change): routes "
                        "slower now become regression findings")
    p.add_argument("-o", "--output", default="apiprof-investigate", metavar="DIR",
                   help="directory of the results (default apiprof-investigate)")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(f"investigate: {text}", file=sys.stderr, flush=True)


def apiprof(*args: str, cwd: Path | None = None, quiet: bool = False) -> int:
    cmd = [sys.executable, "-m", "apiprof", *args]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, cwd=cwd, stdout=out).returncode


def discover(app: str, app_dir: Path, out: Path) -> Path:
    """The app's GET routes as a URL file (apiprof._openapi)."""
    r = subprocess.run([sys.executable, "-m", "apiprof._openapi", app], cwd=app_dir,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise UsageError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else
                         f"cannot read the OpenAPI schema of {app}")
    found = json.loads(r.stdout)
    if not found["urls"]:
        raise UsageError(f"{app} has no GET route whose parameters its schema can fill: "
                         "give the traffic with --urls FILE")
    for line in found["skipped"]:
        say(f"left out of the traffic: {line}")
    out.write_text("".join(f"{u}\n" for u in found["urls"]))
    say(f"traffic: {len(found['urls'])} GET routes from the OpenAPI schema ({out})")
    return out


def first_url(urls: Path) -> str:
    for line in urls.read_text().splitlines():
        parts = line.split("#", 1)[0].split()
        if parts and parts[0].isdigit():
            parts = parts[1:]
        if parts and parts[0] in ("GET", "HEAD"):
            parts = parts[1:]
        if parts and parts[0].startswith("/"):
            return parts[0]
    return "/"


def line_targets(findings: list[dict[str, Any]], app_dir: Path, top: int) -> list[str]:
    """``module:qualname`` of the hot functions in the app's own files, the slowest
    routes' first (nested functions by their outermost named function)."""
    out: list[str] = []
    root = app_dir.resolve()
    # The slow routes' hot functions first, the route with the most work first.
    work = {f["route"]: f["value"] for f in findings if f["kind"] == "slow_route"}
    hot = sorted((f for f in findings if f["kind"] == "hot_function"),
                 key=lambda f: -work.get(f["route"], -1))
    for f in hot:
        if not f["file"] or len(out) >= top:
            continue
        path = Path(f["file"])
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:
            continue
        module = ".".join(rel.with_suffix("").parts)
        qualname = f["function"].split(".<locals>", 1)[0]
        target = f"{module}:{qualname}"
        if target not in out and "<" not in qualname:
            out.append(target)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def line_pass(args: argparse.Namespace, app_dir: Path, urls: Path, targets: list[str],
              out_dir: Path, health: str) -> Path | None:
    """The app under `apiprof lines --function ...`, loaded with the same traffic."""
    port = free_port()
    profile = out_dir / "lines.apiprof"
    log_path = out_dir / "lines-server.log"
    cmd = [sys.executable, "-m", "apiprof", "lines", "-q", "-o", str(profile)]
    for t in targets:
        cmd += ["--function", t]
    cmd += ["-m", "uvicorn", args.app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=app_dir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise UsageError(f"the app exited under apiprof lines (see {log_path})")
            try:
                with urllib.request.urlopen(base + health, timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise UsageError(f"the app did not answer {health} within "
                                     f"{START_TIMEOUT_S:.0f} s (see {log_path})") from None
                time.sleep(0.1)
        rc = apiprof("bench", "--urls", str(urls), "--base", base, "-d", f"{args.duration:g}",
                     "-c", str(args.connections), "--no-progress", quiet=True)
        if rc != 0:
            say(f"the load of the line pass failed (exit {rc})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return profile if profile.exists() else None


def sweep_pass(args: argparse.Namespace, app_dir: Path, urls: Path, out_dir: Path,
               health: str) -> bool:
    """Pass 3: the load stepped up under the tracer (``apiprof bench --sweep``); its table
    and conclusion are printed as it ends."""
    say(f"pass 3: load sweep {args.sweep} under the function tracer, {SWEEP_STEP_S:g} s per "
        f"step, objective {args.slo}")
    rc = apiprof("bench", "--app", args.app, "--app-dir", str(app_dir), "--profile", "trace",
                 "--urls", str(urls), "--health", health, "--sweep", args.sweep, "--slo",
                 args.slo, "-d", f"{SWEEP_STEP_S:g}", "--settle", f"{SWEEP_SETTLE_S:g}",
                 "-c", str(max(args.connections, SWEEP_CONNECTIONS)), "-o",
                 str(out_dir / "sweep.json"))
    if rc != 0:
        say(f"pass 3 failed (exit {rc})")
    return rc == 0


def run(args: argparse.Namespace) -> int:
    if ":" not in args.app:
        raise UsageError(f"--app wants module:attribute, got {args.app!r}")
    app_dir = Path(args.app_dir).resolve()
    if not app_dir.is_dir():
        raise UsageError(f"--app-dir {args.app_dir} is not a directory")
    if args.duration <= 0 or args.warmup < 0 or args.connections < 1 or args.top < 0:
        raise UsageError("-d must be > 0, --warmup >= 0, -c >= 1 and --top >= 0")
    baseline = None
    if args.baseline is not None:  # read first: a bad file fails before minutes of work
        baseline = load_profile(str(Path(args.baseline).resolve()))
        if "warm" in {t["labels"].get("phase") for t in baseline.trees()}:
            baseline = baseline.select({"phase": "warm"})
    out_dir = Path(args.output).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.urls:
        urls = Path(args.urls).resolve()
        if not urls.is_file():
            raise UsageError(f"--urls {args.urls}: no such file")
    else:
        urls = discover(args.app, app_dir, out_dir / "urls.txt")
    health = args.health or first_url(urls)
    if args.sweep:
        from .. import _sweep
        _sweep.parse_range(args.sweep)   # a bad range or objective before any pass
        _sweep.parse_slo(args.slo)

    extra = ["--profile-memory", args.memory] if args.memory != "off" else []
    extra += ["--profile-queries"] if args.queries else []
    say(f"pass 1: {args.app} under the function tracer"
        + (f", {args.memory} memory" if args.memory != "off" else "")
        + (", database statements" if args.queries else "")
        + f", {args.warmup:g} s cold then {args.duration:g} s warm")
    result = out_dir / "bench.json"
    rc = apiprof("bench", "--app", args.app, "--app-dir", str(app_dir), "--profile", "trace",
                 *extra, "--urls", str(urls), "--health", health, "-d", f"{args.duration:g}",
                 "--warmup", f"{args.warmup:g}", "-c", str(args.connections), "-o", str(result))
    profile_path = result.with_suffix(".apiprof")
    if rc != 0 or not profile_path.exists():
        say(f"pass 1 failed (exit {rc})")
        return rc or 1
    profile = _core.load(str(profile_path))
    phases = {t["labels"].get("phase") for t in profile.trees()}
    warm = profile.select({"phase": "warm"}) if "warm" in phases else profile
    findings = warm.findings(baseline=baseline)

    line_profile = None
    targets = line_targets(findings, app_dir, args.top)
    if targets:
        say(f"pass 2: line profile of {', '.join(targets)} under the same traffic")
        lines = line_pass(args, app_dir, urls, targets, out_dir, health)
        if lines is not None:
            line_profile = _core.load(str(lines))
            apiprof("report", str(lines), "-o", str(out_dir / "lines.txt"), quiet=True)
    elif args.top:
        say("pass 2 skipped: no hot function in the app's own files")

    # The report: the warm phase, its findings with the hot lines of the second pass.
    report = out_dir / "report.html"
    options: dict[str, Any] = {"phase": "warm"} if "warm" in phases else {}
    if baseline is not None:
        options["baseline"] = baseline
    if line_profile is not None:
        options["lines"] = line_profile
        findings = warm.findings(lines=line_profile, baseline=baseline)
    _core.write_report(profile, "html", str(report),
                       {**options, "title": f"apiprof investigate {args.app}"})
    _core.write_report(profile, "json", str(out_dir / "report.json"), options)

    swept = sweep_pass(args, app_dir, urls, out_dir, health) if args.sweep else False

    every = findings
    text = format_findings(every)
    (out_dir / "findings.txt").write_text(text)
    (out_dir / "findings.json").write_text(json.dumps(every, indent=1) + "\n")
    print("\n" + text, flush=True)
    print(f"HTML report: {report}")
    print(f"results: {out_dir} (report.json, bench.json, bench.apiprof, findings.txt"
          + (", lines.txt, lines.apiprof" if line_profile is not None else "")
          + (", sweep.json, sweep.html, sweep.svg, sweep.apiprof" if swept else "") + ")")
    return 0
