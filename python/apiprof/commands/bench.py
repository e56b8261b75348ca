"""`apiprof bench`: HTTP load from the C tool apiprof-load, against a URL or an app it starts.

    apiprof bench URL [load options]
    apiprof bench --urls FILE --base URL [load options]
    apiprof bench --app module:app [--app-dir DIR] [--profile trace] [/path | --urls FILE]
                  [-o FILE] [load options]

With --app the app is served by uvicorn on a free 127.0.0.1 port, loaded (cold phase
first with --warmup, then the measured phase), stopped, and one JSON result is written:
the load figures per URL and per route, and with --profile trace the function profile
of the server with its cold and warm phases apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _bench_result as bench_result
from .. import _sweep
from .._output import output_path
from ..errors import UsageError
from . import check

START_TIMEOUT_S = 30.0
RESULT_SCHEMA = 1
# apiprof run's phase names: the profile's trees are labelled phase=cold until
# apiprof-load's phase gate sends SIGUSR1, phase=warm after.
PROFILE_PHASES = "cold,warm"

# Options handed to apiprof-load unchanged: (flags, dest, takes a value, repeatable).
PASS_THROUGH: list[tuple[tuple[str, ...], str, bool, bool, str]] = [
    (("-c", "--connections"), "connections", True, False, "keep-alive connections (10)"),
    (("-t", "--threads"), "threads", True, False, "threads, one event loop each (2)"),
    (("-d", "--duration"), "duration", True, False, "seconds of the measured phase (10)"),
    (("-n", "--requests"), "requests", True, False, "measure exactly N requests"),
    (("-R", "--rate"), "rate", True, False, "open model: requests/s over all connections"),
    (("--warmup",), "warmup", True, False, "seconds of a cold phase, reported apart"),
    (("-m", "--method"), "method", True, False, "method (GET)"),
    (("-H", "--header"), "header", True, True, "'Name: value' for every request"),
    (("-b", "--body"), "body", True, False, "request body (JSON by default)"),
    (("--body-file",), "body_file", True, False, "request body from a file"),
    (("--timeout",), "timeout", True, False, "request timeout in seconds (10)"),
    (("--connect-timeout",), "connect_timeout", True, False, "connect timeout in seconds (3)"),
    (("--json-out",), "json_out", True, False, "also write apiprof-load's JSON to FILE"),
    (("--no-progress",), "no_progress", False, False, "no live progress line"),
]


class BenchError(Exception):
    """A failure that is not a usage mistake (the app did not start, the tool failed)."""


def load_binary() -> Path:
    """The apiprof-load executable: $APIPROF_LOAD, else the one installed in apiprof/bin."""
    override = os.environ.get("APIPROF_LOAD")
    path = Path(override) if override else Path(__file__).resolve().parents[1] / "bin" / (
        "apiprof-load")
    if not path.is_file():
        raise BenchError(f"apiprof-load not found at {path} (reinstall apiprof)")
    return path


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench", help="drive HTTP load (closed or open model) and report latency",
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The URL file format and the JSON schema are in docs/load.md.",
    )
    p.add_argument("url", nargs="?", help="URL, or /path with --app or --base")
    p.add_argument("--urls", metavar="FILE", help="weighted URLs: [WEIGHT] [METHOD] URL [BODY]")
    p.add_argument("--base", metavar="URL", help="origin for /paths in the URL file")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--app", metavar="MODULE:APP", help="start this ASGI app under uvicorn")
    p.add_argument("--app-dir", metavar="DIR", default=".", help="working directory of the app")
    p.add_argument("--health", metavar="PATH", help="path polled until the app answers "
                   "(default: the URL's path, or /)")
    p.add_argument("--profile", choices=["trace", "sample"],
                   help="with --app: run the server under the function profiler (trace) or "
                        "the sampler (sample: apiprof run --sample --idle, wall time of every "
                        "thread); the result gets the profile, cold and warm apart")
    p.add_argument("--profile-memory", choices=["sampled", "full"], metavar="MODE",
                   help="with --profile trace: allocations too (sampled or full; docs/memory.md)")
    p.add_argument("--profile-queries", action="store_true",
                   help="with --profile trace: every database statement too (docs/waits.md)")
    p.add_argument("-o", "--output", metavar="FILE", default="apiprof-bench.json",
                   help="with --app: where the result is written (apiprof-bench.json)")
    p.add_argument("--save-baseline", metavar="FILE",
                   help="with --app: measure latency rounds and exact counts per route and "
                        "write a baseline for apiprof check (docs/check.md)")
    check.add_measure_arguments(p, app=False)
    for flags, dest, value, repeat, text in PASS_THROUGH:
        if not value:
            p.add_argument(*flags, dest=dest, action="store_true", help=text)
        else:
            p.add_argument(*flags, dest=dest, action="append" if repeat else "store", help=text)
    _sweep.add_arguments(p)
    p.set_defaults(func=run)


def load_options(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flags, dest, value, _repeat, _text in PASS_THROUGH:
        v = getattr(args, dest)
        if v is None or v is False:
            continue
        if not value:
            out.append(flags[-1])
        else:
            for item in v if isinstance(v, list) else [v]:
                out.append(f"{flags[-1]}={item}")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        if args.save_baseline:
            if args.app is None:
                raise UsageError("--save-baseline needs --app (the app to measure)")
            return check.save_baseline(args, args.save_baseline)
        if (args.profile_memory or args.profile_queries) and args.profile != "trace":
            raise UsageError("--profile-memory and --profile-queries go with --profile trace")
        if args.sweep is not None:
            from . import bench_sweep
            return bench_sweep.run(args)
        if args.app is None:
            if args.profile:
                raise UsageError("--profile needs --app (the app to start and profile)")
            return run_url(args)
        return run_app(args)
    except BenchError as e:
        print(f"apiprof bench: {e}", file=sys.stderr)
        return 1


def targets(args: argparse.Namespace, base: str | None) -> list[str]:
    """apiprof-load's positional URL or --urls/--base arguments (or --replay/--base)."""
    if getattr(args, "replay", None):
        return _sweep.replay_targets(args, base)
    if args.urls and args.url:
        raise UsageError("give either a URL or --urls FILE, not both")
    if args.urls:
        return ["--urls", args.urls, *(["--base", base] if base else [])]
    if args.url is None:
        if base is None:
            raise UsageError("no URL given (or --urls FILE, or --app module:app)")
        return [base + "/"]
    if base is not None:
        if not args.url.startswith("/"):
            raise UsageError(f"with --app, give a /path, not {args.url!r}")
        return [base + args.url]
    return [args.url]


def run_url(args: argparse.Namespace) -> int:
    cmd = [str(load_binary()), *load_options(args), *(["--json"] if args.json else [])]
    cmd += targets(args, args.base)
    return subprocess.run(cmd).returncode


# ---- --app ------------------------------------------------------------------------


def profiler_command(profile: str, output: Path, extra: list[str] | None = None,
                     phases: str = PROFILE_PHASES) -> list[str]:
    """The seam where profiling joins the server: the argv prefix that runs
    ``python -m uvicorn ...`` under ``apiprof run`` (mode ``profile``: trace or sample,
    options ``extra``) writing ``output``, its trees labelled with the first of
    ``phases`` until SIGUSR1, then with the next (phase=cold, then phase=warm)."""
    assert profile in ("trace", "sample")
    mode = ["--sample", "--idle"] if profile == "sample" else []
    return [sys.executable, "-m", "apiprof", "run", "-q", *mode, "--phases", phases,
            *(extra or []), "-o", str(output)]


def profiler_options(args: argparse.Namespace) -> list[str]:
    """``apiprof run`` options of --profile-memory and --profile-queries."""
    out = ["--memory", args.profile_memory] if args.profile_memory else []
    return out + (["--queries"] if args.profile_queries else [])


def server_command(app: str, port: int, profile: str | None, profile_out: Path,
                   extra: list[str] | None = None) -> list[str]:
    uvicorn = ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    if profile is None:
        return [sys.executable, *uvicorn]
    return [*profiler_command(profile, profile_out, extra), *uvicorn]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _interruptible_children() -> Iterator[None]:
    """While it is open, a child started gets SIGINT's default action, also when this
    process was started with SIGINT ignored (a background job of a shell without job
    control, as CI runs it): an ignored signal stays ignored across exec, and the
    server's graceful stop (and the profile written on it) starts with SIGINT."""
    ignored = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
    if ignored:   # a handled signal is reset to its default by exec
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class AppServer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(empty log)"

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"the app exited with code {self.proc.returncode} before serving: "
                    f"{self.tail()}")
            try:
                opener.open(self.url + path, timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # it answered; the status is the app's business
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"the app did not answer {self.url}{path} within "
                                 f"{START_TIMEOUT_S:.0f} s: {self.tail()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGINT (uvicorn's graceful shutdown), then SIGTERM, then SIGKILL: a profiled
        server writes its profile on SIGINT or SIGTERM, so it gets time for that."""
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait()


def app_arguments(args: argparse.Namespace) -> tuple[Path, Path]:
    """--app-dir and -o of a run with --app, checked: a usage error names what is wrong."""
    if args.base:
        raise UsageError("--base is set by --app (the started server)")
    if ":" not in args.app:
        raise UsageError(f"--app wants module:attribute, got {args.app!r}")
    app_dir = Path(args.app_dir)
    if not app_dir.is_dir():
        raise UsageError(f"--app-dir {app_dir} is not a directory")
    output = Path(args.output)
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: no directory {output.parent}")
    return app_dir, output


def run_app(args: argparse.Namespace) -> int:
    app_dir, output = app_arguments(args)
    # The server runs in --app-dir: every path it is given is made absolute here, so that
    # a relative -o means the same file as it does to the user (their working directory).
    profile_out = output.with_suffix(".apiprof")
    profile_abs = profile_out.resolve()
    if args.profile and profile_out == output:
        raise UsageError(f"-o {output}: the profile goes to FILE.apiprof; name the result "
                         "otherwise (e.g. result.json)")
    port = free_port()
    cmd = server_command(args.app, port, args.profile, profile_abs, profiler_options(args))
    base = f"http://127.0.0.1:{port}"
    load_targets = targets(args, base)  # validate before starting anything
    if args.urls:
        load_targets[1] = str(Path(args.urls).resolve())
    health = args.health or (args.url if args.url else "/")
    binary = load_binary()
    with tempfile.TemporaryDirectory(prefix="apiprof-bench-") as tmp:
        log = Path(tmp) / "server.log"
        load_json = Path(tmp) / "load.json"
        with open(log, "wb") as log_file, _interruptible_children():
            proc = subprocess.Popen(
                cmd, cwd=app_dir, stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        server = AppServer(proc, base, log)
        try:
            server.wait_ready(health)
            # With a profile, apiprof-load's phase gate tells the server (SIGUSR1 to
            # apiprof run) when the measured phase starts, once every cold request ended.
            gate = ["--phase-signal", str(proc.pid)] if args.profile else []
            load_cmd = [str(binary), *load_options(args), "--histograms",
                        f"--json-out={load_json}", *gate, *load_targets]
            done = subprocess.run(load_cmd, stdout=subprocess.DEVNULL if args.json else None)
        finally:
            code = server.stop()
        if done.returncode != 0:
            return done.returncode  # apiprof-load said why on stderr
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            raise BenchError(f"the app exited with code {code}: {server.tail()}")
        load = json.loads(load_json.read_text())
        try:
            requests = [bench_result.request_of(u) for u in load["phases"]["warm"]["urls"]]
            matches = bench_result.match_routes(args.app, app_dir, requests)
            routes, profile, warm_functions = bench_result.build(
                load, matches, profile_abs if args.profile else None, args.profile)
        except bench_result.ResultError as e:
            raise BenchError(str(e)) from None
    result = {
        "tool": "apiprof-bench",
        "schema": RESULT_SCHEMA,
        "app": args.app,
        "server": {"command": cmd, "exit_code": code},
        "load": load,
        "routes": routes,
        "profile": profile,
    }
    with output_path(str(output)) as path:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print("\n" + bench_result.summary(result, warm_functions))
        print(f"result: {output}" + (f" (profile: {profile_out})" if profile else ""))
    return 0
