"""``apiprof run``: run a script or ``-m`` module under the function tracer; write its profile."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from .. import _labels
from .._findings import format_findings
from .._launch import Program, add_program_arguments, launch
from .._profiler import CHECKPOINT_INTERVAL, STALL_THRESHOLD, Profiler, clock_note, format_table
from ..errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a script or module under the function tracer",
        description="Run a Python script (or -m module) with __main__ semantics under apiprof's "
                    "exact function tracer; write the profile at exit, also on SIGINT/SIGTERM.",
        usage="apiprof run [-o FILE] [--clock wall|cpu] [--cpu] [--no-builtins] [--all] "
              "[--phases A,B,...] [--timeline] [--timeline-events N] [--stall-threshold S] "
              "[--no-lock-waits] [--checkpoint-interval S] "
              "[-q] (script.py | -m module) [args ...]",
    )
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time functions by wall clock (default) or thread CPU time")
    p.add_argument("--cpu", action="store_true",
                   help="also record each function's thread CPU time beside its wall time "
                        "(columns cpu and cpu total; costs a CPU clock read per call and "
                        "return); wall clock only")
    p.add_argument("--no-builtins", action="store_true", help="do not record C functions")
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
    add_program_arguments(p, "NAME.apiprof")
    p.set_defaults(func=run)


MAX_PHASES = 16
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
        self.profiler = Profiler(clock=args.clock, builtins=not args.no_builtins,
                                 exclude=("runpy",), labels=True,
                                 timeline=args.timeline_events if args.timeline else 0,
                                 cpu=args.cpu, stall_threshold=args.stall_threshold,
                                 locks=not args.no_lock_waits,
                                 checkpoint=program.output if args.checkpoint_interval else None,
                                 checkpoint_interval=args.checkpoint_interval or 1.0)
        self._previous_usr1: Any = None
        self.all = bool(args.all)

    def start(self) -> None:
        if self.phases:
            self._previous_usr1 = signal.signal(signal.SIGUSR1,
                                                _PhaseSwitch(self.profiler, self.phases))
        _labels.install_uvicorn_hook()
        self.profiler.start()

    def stop(self) -> None:
        self.profiler.stop()
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)

    def save(self, output: str) -> None:
        self.profiler.save(output)

    def summary(self) -> str:
        profile = self.profiler.profile
        text = (f"apiprof: profile of {' '.join(self.program.argv)}\n\n"
                + format_findings(profile.findings(), SUMMARY_FINDINGS) + "\n"
                + format_table(self.profiler.functions(), "cumtime", 20, everything=self.all))
        meta = self.profiler.profile.meta
        text += clock_note(meta)
        dropped = int(meta.get("timeline_dropped", 0))
        if dropped:
            text += (f"apiprof: the timeline kept the last {meta['timeline_spans']} spans; "
                     f"{dropped} older ones were dropped (--timeline-events)\n")
        return text


def run(args: argparse.Namespace) -> int:
    if args.timeline and args.clock != "wall":
        raise UsageError("--timeline needs --clock wall")
    if args.cpu and args.clock != "wall":
        raise UsageError("--cpu needs --clock wall (with --clock cpu every time is CPU time)")
    if not args.checkpoint_interval >= 0:
        raise UsageError("--checkpoint-interval must be seconds >= 0")
    if args.stall_threshold < 0:
        raise UsageError("--stall-threshold must be seconds >= 0")
    if args.timeline and args.timeline_events < 1:
        raise UsageError("--timeline-events must be at least 1")
    program = Program.from_args(args, ".apiprof")
    return launch("apiprof run", program, FunctionProducer(args, program), quiet=args.quiet)
