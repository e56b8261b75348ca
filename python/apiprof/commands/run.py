"""``apiprof run``: run a script or ``-m`` module under the function tracer; write its profile."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType
from typing import Any

from .. import _labels, _spy, _workers
from .._findings import format_findings
from .._launch import Program, add_program_arguments, launch
from .._output import output_path
from .._profiler import (
    CHECKPOINT_INTERVAL,
    MEMORY_INTERVAL,
    MEMORY_MODES,
    MEMORY_RATE,
    STALL_THRESHOLD,
    Profiler,
    clock_note,
    format_table,
)
from .._table import format_bytes
from ..errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a script or module under the function tracer",
        description="Run a Python script (or -m module) with __main__ semantics under apiprof's "
                    "exact function tracer; write the profile at exit, also on SIGINT/SIGTERM.",
        usage="apiprof run [-o FILE] [--clock wall|cpu] [--cpu] [--no-builtins] [--queries] "
              "[--all] [--phases A,B,...] [--timeline] [--timeline-events N] "
              "[--stall-threshold S] [--no-lock-waits] [--checkpoint-interval S] "
              "[--memory [full|sampled]] [--memory-rate BYTES] [--memory-seed N] "
              "[--memory-interval S] [--no-calls] "
              "[--sample [--rate RATE] [--idle] [--async] [--requests]] [-q] "
              "(script.py | -m module) [args ...]",
    )
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time functions by wall clock (default) or thread CPU time")
    p.add_argument("--cpu", action="store_true",
                   help="also record each function's thread CPU time beside its wall time "
                        "(columns cpu and cpu total; costs a CPU clock read per call and "
                        "return); wall clock only")
    p.add_argument("--no-builtins", action="store_true", help="do not record C functions")
    p.add_argument("--queries", action="store_true",
                   help="also record each database statement (sqlite3, and SQLAlchemy / "
                        "SQLModel on SQLite): count, time, rows, route and calling line per "
                        "statement, and N+1 (docs/waits.md)")
    p.add_argument("--all", action="store_true",
                   help="the exit summary also lists library and idle-waiting functions")
    p.add_argument("--phases", metavar="A,B,...",
                   help="label the profile's trees phase=A from the start; each SIGUSR1 moves "
                        "to the next name (apiprof report --phase NAME reads one back)")
    p.add_argument("--timeline", action="store_true",
                   help="also keep the last --timeline-events frame spans (apiprof report "
                        "--format chrome); wall clock only")
    p.add_argument("--timeline-events", type=int, default=TIMELINE_EVENTS, metavar="N",
                   help=f"spans the timeline keeps, the latest (default {TIMELINE_EVENTS})")
    p.add_argument("--stall-threshold", type=float, default=STALL_THRESHOLD, metavar="S",
                   help="record every event-loop step of S seconds or more as a stall "
                        f"(default {STALL_THRESHOLD}; 0: off; --clock wall only)")
    p.add_argument("--no-lock-waits", action="store_true",
                   help="do not time lock acquisitions (threading.Lock stays the plain lock)")
    p.add_argument("--checkpoint-interval", type=float, default=CHECKPOINT_INTERVAL,
                   metavar="S",
                   help="save the profile to -o every S seconds while the program runs, so a "
                        "run killed by SIGKILL keeps its work up to the last save (default "
                        f"{CHECKPOINT_INTERVAL:g}; 0: only at exit)")
    p.add_argument("--sample", action="store_true",
                   help="instead of tracing, start the program as a child process and sample "
                        "it from outside with apiprof-spy (no hooks in the program)")
    p.add_argument("--rate", type=float, default=_spy.DEFAULT_RATE, metavar="RATE",
                   help=f"with --sample: samples per second (default {_spy.DEFAULT_RATE:g})")
    p.add_argument("--idle", action="store_true",
                   help="with --sample: also keep samples of threads that are not running")
    p.add_argument("--async", dest="async_chains", action="store_true",
                   help="with --sample: also sample each asyncio task that waits in an await "
                        "(its await chain, thread 'awaiting')")
    p.add_argument("--requests", action="store_true",
                   help="with --sample: label the samples of each request of apiprof's "
                        "middleware with its number (request=N)")
    p.add_argument("--memory", nargs="?", const="sampled", choices=MEMORY_MODES,
                   help="also record allocations and frees per function and line (alloc_bytes, "
                        "alloc_count, live_bytes, peak_bytes): full (every block, exact) or "
                        "sampled (the default: byte-sampled, weighted estimates)")
    add_sampling_arguments(p)
    p.add_argument("--no-calls", action="store_true",
                   help="with --memory: trace no calls (nothing is timed); each tracked "
                        "allocation is charged to the call path read from the running frames "
                        "then, so sampled memory costs little more than the allocation hook")
    p.add_argument("--memory-interval", type=float, default=MEMORY_INTERVAL, metavar="S",
                   help="sample the process's RSS (and with --memory the traced heap) every S "
                        f"seconds into the profile: memory over time (default {MEMORY_INTERVAL:g}; "
                        "0: off)")
    add_program_arguments(p, "NAME.apiprof")
    p.set_defaults(func=run)


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """--memory-rate and --memory-seed (apiprof run and apiprof lines)."""
    p.add_argument("--memory-rate", type=byte_count, default=MEMORY_RATE, metavar="BYTES",
                   help="sampled memory: mean bytes between samples (default 512K; suffixes "
                        "K, M, G)")
    p.add_argument("--memory-seed", type=int, default=0, metavar="N",
                   help="sampled memory: seed of the sampling sequence (default 0: from the "
                        "clock)")


def byte_count(value: str) -> int:
    """``BYTES`` with an optional K, M or G suffix (powers of 1024)."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:].upper(), 1)
    digits = value[:-1] if scale > 1 else value
    if not digits.isdigit() or not 1 <= int(digits) * scale <= 1 << 40:
        raise argparse.ArgumentTypeError(f"want bytes from 1 to 1T (suffix K, M or G), "
                                         f"not {value!r}")
    return int(digits) * scale


MAX_PHASES = 64
SUMMARY_FINDINGS = 5
TIMELINE_EVENTS = 1_000_000


def _phase_names(value: str | None) -> list[str]:
    if value is None:
        return []
    names = value.split(",")
    if len(names) > MAX_PHASES or any(not n or len(n) > 100 or not n.isprintable()
                                      for n in names):
        raise UsageError(f"--phases wants 1 to {MAX_PHASES} comma-separated names of 1-100 "
                         f"printable characters, got {value!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"--phases names must differ, got {value!r}")
    return names


class _PhaseSwitch:
    """SIGUSR1 handler: the profiler moves to the next phase name. Python runs it in the
    main thread between bytecodes (the C-level handler only sets a flag), so the
    switch happens before the main thread runs anything else."""

    def __init__(self, profiler: Profiler, names: list[str]) -> None:
        self.profiler = profiler
        self.names = names
        self.index = 0
        profiler.set_phase(names[0])

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.index + 1 >= len(self.names):
            print(f"apiprof run: SIGUSR1 after the last phase ({self.names[-1]}): ignored",
                  file=sys.stderr)
            return
        self.index += 1
        self.profiler.set_phase(self.names[self.index])


class FunctionProducer:
    """The function tracer as ``apiprof run``'s producer; with phase names, SIGUSR1
    moves it to the next phase while the program runs."""

    def __init__(self, args: argparse.Namespace, program: Program) -> None:
        self.program = program
        self.phases = _phase_names(args.phases)
        # runpy's own frames are the launcher, not the program.
        # Request work of an app uvicorn serves is labelled route=...; named tasks task=...
        # The options spawned workers are traced with too (apiprof._workers).
        self.options: dict[str, Any] = dict(
            clock=args.clock, builtins=not args.no_builtins, exclude=["runpy"], labels=True,
            timeline=args.timeline_events if args.timeline else 0, cpu=args.cpu,
            queries=args.queries, stall_threshold=args.stall_threshold,
            locks=not args.no_lock_waits, checkpoint_interval=args.checkpoint_interval or 1.0,
            memory=args.memory, memory_rate=args.memory_rate, memory_seed=args.memory_seed,
            memory_interval=args.memory_interval, calls=not args.no_calls)
        self.profiler = Profiler(
            **self.options, checkpoint=program.output if args.checkpoint_interval else None)
        self.checkpoint = bool(args.checkpoint_interval)
        self.workers: _workers.WorkerRun | None = None
        self.merged: list[int] = []
        self._previous_usr1: Any = None
        self.all = bool(args.all)

    def start(self) -> None:
        if self.phases:
            self._previous_usr1 = signal.signal(signal.SIGUSR1,
                                                _PhaseSwitch(self.profiler, self.phases))
        _labels.install_uvicorn_hook()
        self.workers = _workers.begin(self.program.output, self.options, self.checkpoint)
        self.profiler.start()

    def stop(self) -> None:
        self.profiler.stop()
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)

    def save(self, output: str) -> None:
        workers, self.workers = self.workers, None
        if workers is None or workers.parent != os.getpid():  # a forked child's own file
            self.profiler.save(output)
            return
        try:
            self.profiler.save(output)
        except OSError:
            _workers.end(workers, merge_into_output=False)
            raise
        try:
            self.merged = _workers.end(workers)
        except (OSError, ValueError) as e:
            raise OSError(f"cannot merge the workers' profiles into {output}: {e}") from None

    def summary(self) -> str:
        profile = self.profiler.profile
        text = (f"apiprof: profile of {' '.join(self.program.argv)}\n\n"
                + format_findings(profile.findings(), SUMMARY_FINDINGS) + "\n")
        if self.profiler.calls:
            text += format_table(self.profiler.functions(), "cumtime", 20, everything=self.all)
        else:  # nothing timed: the table of bytes allocated
            try:
                text += format_table(profile.project("memory").functions(), "cumtime", 20,
                                     everything=self.all, value=lambda v: f"{v:.0f}B")
            except ValueError:  # no block was tracked (a short run, sampled)
                text += "no allocation was tracked: nothing to list\n"
        meta = self.profiler.profile.meta
        text += clock_note(meta)
        text += memory_note(meta)
        if self.merged:
            text += (f"apiprof: merged the profiles of {len(self.merged)} worker processes "
                     f"into {self.program.output}, labelled pid (apiprof report --pid PID); "
                     f"the table above is this process's alone\n")
        dropped = int(meta.get("timeline_dropped", 0))
        if dropped:
            text += (f"apiprof: the timeline kept the last {meta['timeline_spans']} spans; "
                     f"{dropped} older ones were dropped (--timeline-events)\n")
        return text


def memory_note(meta: dict[str, str]) -> str:
    """With --memory: the traced bytes alive at the end and at most, and the mode."""
    if "memory" not in meta:
        return ""
    live, peak = int(meta.get("memory_live_bytes", 0)), int(meta.get("memory_peak_bytes", 0))
    mode = meta["memory"]
    if mode == "sampled":
        mode += f", one sample per {format_bytes(int(meta.get('memory_rate', 0)))} on average"
    return (f"memory ({mode}): {format_bytes(live)} allocated during the run still alive at "
            f"its end, {format_bytes(peak)} at most (apiprof report --metric live)\n")


def run(args: argparse.Namespace) -> int:
    if args.timeline and args.clock != "wall":
        raise UsageError("--timeline needs --clock wall")
    if args.cpu and args.clock != "wall":
        raise UsageError("--cpu needs --clock wall (with --clock cpu every time is CPU time)")
    if not args.checkpoint_interval >= 0:
        raise UsageError("--checkpoint-interval must be seconds >= 0")
    if not (args.memory_interval == 0 or 0.001 <= args.memory_interval <= 3600):
        raise UsageError("--memory-interval must be seconds from 0.001 to 3600 (0: off)")
    if args.stall_threshold < 0:
        raise UsageError("--stall-threshold must be seconds >= 0")
    if args.timeline and args.timeline_events < 1:
        raise UsageError("--timeline-events must be at least 1")
    if args.sample and (args.timeline or args.cpu or args.clock != "wall"):
        raise UsageError("--sample takes no tracer option (--timeline, --cpu, --clock)")
    if args.no_calls:
        if args.memory is None:
            raise UsageError("--no-calls needs --memory (without calls and memory nothing "
                             "is recorded)")
        asked = [o for o, on in (("--cpu", args.cpu), ("--clock cpu", args.clock != "wall"),
                                 ("--timeline", args.timeline), ("--queries", args.queries),
                                 ("--sample", args.sample)) if on]
        if asked:
            raise UsageError(f"--no-calls traces no calls: {', '.join(asked)} need them")
    if (args.idle or args.async_chains or args.requests
            or args.rate != _spy.DEFAULT_RATE) and not args.sample:
        raise UsageError("--rate, --idle, --async and --requests need --sample")
    program = Program.from_args(args, ".apiprof")
    if args.sample:
        return _run_sampled(args, program)
    return launch("apiprof run", program, FunctionProducer(args, program), quiet=args.quiet)


def _run_sampled(args: argparse.Namespace, program: Program) -> int:
    """``run --sample``: the program in a child interpreter, sampled from outside until it
    exits; returns its exit status."""
    _spy.check_rate(args.rate)
    cmd = [sys.executable, *(["-m"] if program.kind == "module" else []), *program.argv]
    child = subprocess.Popen(cmd)
    try:
        with output_path(program.output) as path:
            _spy.record(child.pid, path, args.rate, None, args.idle, quiet=args.quiet,
                        wait_start=True, phases=_phase_names(args.phases),
                        async_chains=args.async_chains, requests=args.requests)
    except _spy.SpyError as e:
        print(f"apiprof run: {e}", file=sys.stderr)
        child.terminate()
        child.wait()
        return e.status
    finally:
        # The sampler ends when the program exits or when asked to stop; a program still
        # running then was asked to stop too (a signal sent to this process alone). While
        # it stops, SIGINT and SIGTERM sent here are passed on (a second one makes uvicorn
        # stop at once), so this process never exits before the program and leaves it
        # running.
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        previous_term = signal.signal(signal.SIGTERM,
                                      lambda s, f: child.send_signal(signal.SIGTERM))
        try:
            while True:
                try:
                    status = child.wait()
                    break
                except KeyboardInterrupt:
                    child.send_signal(signal.SIGINT)
        finally:
            signal.signal(signal.SIGTERM, previous_term)
    if not args.quiet:
        sys.stderr.write(f"apiprof: wrote {program.output} (apiprof report {program.output})\n")
    return status if status >= 0 else 128 - status
