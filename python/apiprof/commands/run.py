"""``apiprof run``: run a script or ``-m`` module under the function tracer; write its profile."""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import traceback
import types
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from .. import _labels
from .._profiler import Profiler, format_table
from ..errors import UsageError


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so the program unwinds and the profile is written."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a script or module under the function tracer",
        description="Run a Python script (or -m module) with __main__ semantics under apiprof's "
                    "exact function tracer; write the profile at exit, also on SIGINT/SIGTERM.",
        usage="apiprof run [-o FILE] [--clock wall|cpu] [--no-builtins] [--phases A,B,...] "
              "[--timeline] [--timeline-events N] [-q] (script.py | -m module) [args ...]",
    )
    p.add_argument("-o", "--output", metavar="FILE",
                   help="profile file to write (default: NAME.apiprof in the current directory)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time functions by wall clock (default) or thread CPU time")
    p.add_argument("--no-builtins", action="store_true", help="do not record C functions")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary at exit")
    p.add_argument("--phases", metavar="A,B,...",
                   help="label the profile's trees phase=A from the start; each SIGUSR1 moves "
                        "to the next name (apiprof report --phase NAME reads one back)")
    p.add_argument("--timeline", action="store_true",
                   help="also keep the last --timeline-events frame spans (apiprof report "
                        "--format chrome); wall clock only")
    p.add_argument("--timeline-events", type=int, default=TIMELINE_EVENTS, metavar="N",
                   help=f"spans the timeline keeps, the latest (default {TIMELINE_EVENTS})")
    p.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [args]",
                   help="run a library module as a script (the rest are its arguments)")
    p.add_argument("target", nargs=argparse.REMAINDER, help="script.py [args ...] or module args")
    p.set_defaults(func=run)


def _program(args: argparse.Namespace) -> tuple[str, list[str], str]:
    """(kind, argv, name): kind "module" or "script"."""
    if args.module is not None:
        if not args.module:
            raise UsageError("-m needs a module name")
        return "module", [*args.module, *args.target], args.module[0]
    if not args.target:
        raise UsageError("give a script to run, or -m MODULE")
    script = args.target[0]
    if not os.path.isfile(script):
        raise UsageError(f"cannot run {script}: no such file")
    if not os.access(script, os.R_OK):
        raise UsageError(f"cannot run {script}: not readable")
    name = os.path.splitext(os.path.basename(script))[0] or "script"
    return "script", list(args.target), name


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


MAX_PHASES = 16
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


def _run_script_code(code: CodeType, path: str) -> None:
    """Execute compiled script ``code`` as ``__main__`` (what runpy.run_path does
    for a plain file), for callers that must see the code objects first."""
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__loader__ = None
    main.__package__ = None
    main.__spec__ = None
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _execute(kind: str, argv: list[str],
             prepare: Callable[[CodeType], None] | None = None) -> int:
    """Run the program like ``python`` would; returns its exit status. With
    ``prepare``, a script is compiled first and ``prepare`` sees its code."""
    sys.argv[:] = argv
    try:
        if kind == "module":
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        elif prepare is not None:
            with open(argv[0], "rb") as f:
                code = compile(f.read(), argv[0], "exec")
            prepare(code)
            _run_script_code(code, argv[0])
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except _Terminated:
        return 128 + signal.SIGTERM
    except BaseException:  # the program's own error: shown as python shows it
        traceback.print_exc()
        return 1
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def setup(args: argparse.Namespace, suffix: str = ".apiprof") -> tuple[str, list[str], str]:
    """Check the program and the output of ``run``-like commands (``args.module``,
    ``args.target``, ``args.output``) and set ``sys.path[0]`` as python would.
    Returns (kind, argv, absolute output path); UsageError on a mistake."""
    kind, argv, name = _program(args)
    # sys.path[0] as python sets it: the current directory for -m, else the script's.
    first = os.getcwd() if kind == "module" else os.path.dirname(os.path.abspath(argv[0]))
    sys.path[0:1] = [first]
    if kind == "module" and not _importable(name):
        raise UsageError(f"no module named {name!r}")
    output = os.path.abspath(args.output or f"{name}{suffix}")
    out_dir = os.path.dirname(output)
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise UsageError(f"cannot write {args.output or output}: directory is missing or read-only")
    import pkgutil  # noqa: F401  (runpy imports it lazily: not part of the program's profile)

    return kind, argv, output


def run(args: argparse.Namespace) -> int:
    kind, argv, output = setup(args)
    names = _phase_names(args.phases)
    if args.timeline and args.clock != "wall":
        raise UsageError("--timeline needs --clock wall")
    if args.timeline and args.timeline_events < 1:
        raise UsageError("--timeline-events must be at least 1")
    previous = signal.signal(signal.SIGTERM, _terminate)
    # runpy's own frames are the launcher, not the program.
    # Request work of an app uvicorn serves is labelled route=...; named tasks task=...
    profiler = Profiler(clock=args.clock, builtins=not args.no_builtins, exclude=("runpy",),
                        labels=True, timeline=args.timeline_events if args.timeline else 0)
    _labels.install_uvicorn_hook()
    previous_usr1 = signal.signal(signal.SIGUSR1, _PhaseSwitch(profiler, names)) if names else None
    profiler.start()
    try:
        status = _execute(kind, argv)
    finally:
        profiler.stop()
        signal.signal(signal.SIGTERM, previous)
        if previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, previous_usr1)
    profile = profiler.profile
    try:
        profile.save(output)
    except OSError as e:
        print(f"apiprof run: {e}", file=sys.stderr)
        return status or 1
    if not args.quiet:
        sys.stderr.write("\n" + format_table(profile.functions(), "cumtime", 20,
                                             header=f"apiprof: profile of {' '.join(argv)}"))
        dropped = int(profile.meta.get("timeline_dropped", 0))
        if dropped:
            sys.stderr.write(f"apiprof: the timeline kept the last "
                             f"{profile.meta['timeline_spans']} spans; {dropped} older ones "
                             f"were dropped (--timeline-events)\n")
        sys.stderr.write(f"apiprof: wrote {output} (apiprof report {output})\n")
    return status
