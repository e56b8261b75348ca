"""`apiprof bench --sweep`: the command side (starting the app, under the profiler with one
phase per step, then the table, the conclusion and the result file); the figures are
apiprof._sweep's."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import _bench_result as bench_result
from .. import _sweep
from ..errors import UsageError
from . import bench

DEFAULT_STEP_S = 5.0
# Options of a single run that the sweep sets per step itself.
SWEEP_OWNS = ("rate", "duration", "warmup", "requests", "json_out", "no_progress")


def _options(args: argparse.Namespace) -> list[str]:
    saved = {k: getattr(args, k) for k in SWEEP_OWNS}
    for k in SWEEP_OWNS:
        setattr(args, k, None)
    try:
        return bench.load_options(args)
    finally:
        for k, v in saved.items():
            setattr(args, k, v)


def _check(args: argparse.Namespace) -> tuple[list[float] | None, _sweep.Slo]:
    for opt, dest in (("-R", "rate"), ("-n", "requests"), ("--warmup", "warmup")):
        if getattr(args, dest) is not None:
            raise UsageError(f"--sweep sets the rate, length and settle time of each step: "
                             f"drop {opt}")
    if not 0 <= args.settle <= 600:
        raise UsageError(f"--settle wants 0 to 600 seconds, got {args.settle:g}")
    try:
        args.duration_s = float(args.duration) if args.duration is not None else DEFAULT_STEP_S
    except ValueError:
        raise UsageError(f"--duration wants seconds, got {args.duration!r}") from None
    if not 0.1 <= args.duration_s <= 3600:
        raise UsageError(f"--duration wants 0.1 to 3600 seconds per step, got {args.duration}")
    return _sweep.parse_range(args.sweep), _sweep.parse_slo(args.slo)


def _ints(args: argparse.Namespace) -> tuple[int, int]:
    try:
        c = int(args.connections) if args.connections is not None else 10
        t = int(args.threads) if args.threads is not None else 2
    except ValueError:
        raise UsageError("-c and -t want integers") from None
    return c, min(t, c)


def run(args: argparse.Namespace) -> int:
    rates, slo = _check(args)
    connections, threads = _ints(args)
    log = _sweep.log_stream()
    with _sweep.make_tmp() as tmp:
        driver = _sweep.Driver(bench.load_binary(), _options(args), [], args.duration_s,
                               args.settle, slo, connections, threads, tmp=Path(tmp))
        if args.app is None:
            if args.profile:
                raise UsageError("--profile needs --app (the app to start and profile)")
            driver.targets = bench.targets(args, args.base)
            steps = _sweep.sweep(driver, rates, log)
            return _finish(args, steps, driver, slo, None)
        return _run_app(args, driver, rates, slo, log)


def _server_command(args: argparse.Namespace, port: int, profile_out: Path,
                    nsteps: int) -> list[str]:
    uvicorn = ["-m", "uvicorn", args.app, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    if not args.profile:
        return [sys.executable, *uvicorn]
    phases = ",".join(_sweep.phase_names(nsteps))
    return [*bench.profiler_command(args.profile, profile_out, bench.profiler_options(args),
                                    phases), *uvicorn]


def _run_app(args: argparse.Namespace, driver: _sweep.Driver, rates: list[float] | None,
             slo: _sweep.Slo, log: Any) -> int:
    app_dir, output = bench.app_arguments(args)
    profile_out = output.with_suffix(".apiprof").resolve()
    if args.profile and profile_out == output.resolve():
        raise UsageError(f"-o {output}: the profile goes to FILE.apiprof; name the result "
                         "otherwise (e.g. result.json)")
    nsteps = len(rates) if rates is not None else _sweep.AUTO_MAX_STEPS + 2
    port = bench.free_port()
    base = f"http://127.0.0.1:{port}"
    driver.targets = bench.targets(args, base)
    if args.urls:
        driver.targets[1] = str(Path(args.urls).resolve())
    cmd = _server_command(args, port, profile_out, nsteps)
    log_path = driver.tmp / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=app_dir, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = bench.AppServer(proc, base, log_path)
    try:
        server.wait_ready(args.health or (args.url if args.url else "/"))
        load0 = driver.tmp / "probe.json"
        requests = _url_requests(driver, load0)
        driver.matches = bench_result.match_routes(args.app, app_dir, requests)
        driver.server_pid = proc.pid
        driver.profile_pid = proc.pid if args.profile else None
        steps = _sweep.sweep(driver, rates, log)
    except (bench_result.ResultError, _sweep.SweepError) as e:
        raise bench.BenchError(str(e)) from None
    finally:
        code = server.stop()
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        raise bench.BenchError(f"the app exited with code {code}: {server.tail()}")
    return _finish(args, steps, driver, slo, profile_out if args.profile else None)


def _url_requests(driver: _sweep.Driver, out: Path) -> list[tuple[str, str]]:
    """(method, path) of every URL apiprof-load will send, from one request of it (its
    JSON names the URL rows in order)."""
    # -R: a replayed log is then its mix, which needs no time in the log
    cmd = [str(driver.binary), *driver.load_opts, "-R", "1000", "-n", "1", "-c", "1", "-t", "1",
           "--no-progress", "--json", f"--json-out={out}", *driver.targets]
    code, _ = driver.run_load(cmd, "urls")
    if code != 0:
        raise _sweep.SweepError(f"apiprof-load failed (exit code {code})")
    load = json.loads(out.read_text())
    return [bench_result.request_of(u) for u in load["phases"]["warm"]["urls"]]


def _finish(args: argparse.Namespace, steps: list[_sweep.Step], driver: _sweep.Driver,
            slo: _sweep.Slo, profile: Path | None) -> int:
    analysis = _sweep.analyse(steps, driver.connections, driver.threads)
    grew = None
    hi = analysis["sustained_rps"]
    hi_i = next((i for i, s in enumerate(steps) if s.rate == hi), len(steps) - 1)
    if hi_i == 0:
        hi_i = len(steps) - 1   # only the first step sustained: compare with the last
    if profile is not None and hi_i > 0:
        low = (steps[0].phase, steps[0].overall["requests"])
        high = (steps[hi_i].phase, steps[hi_i].overall["requests"])
        try:
            rows = _sweep.what_grew(profile, low, high)
        except (OSError, ValueError) as e:
            raise bench.BenchError(f"cannot read {profile}: {e}") from None
        grew = {"file": str(profile), "low": low[0], "high": high[0],
                "low_rps": steps[0].rate, "high_rps": steps[hi_i].rate, "rows": rows}
    result = _sweep.result_of(steps, analysis, slo, args, grew)
    title = f"load sweep of {args.app or args.base or args.url}"
    try:
        pages = _sweep.write(result, args.output, steps, title, profile)
    except (OSError, ValueError) as e:
        raise bench.BenchError(f"cannot write the sweep into {profile}: {e}") from None
    if args.json:
        print(json.dumps(result))
    else:
        print(_sweep.text(steps, result))
        extra = [str(p) for p in pages] + ([f"profile: {profile}"] if profile else [])
        print(f"result: {args.output}" + (f" ({', '.join(extra)})" if extra else ""))
    return 0
