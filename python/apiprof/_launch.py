"""The program launcher of ``apiprof run``, ``apiprof lines`` and every command that runs a
script or ``-m`` module under a producer: arguments, ``__main__`` semantics, exit status,
and SIGINT/SIGTERM that still stop the producer and write its profile. A child forked by
the program gets apiprof's SIGTERM handler removed (it behaves as without apiprof) and,
should it return to the launcher, writes its own profile, ``NAME.<pid>.apiprof``.

A command adds its own options, makes a ``Producer`` and calls ``launch``:

    add_program_arguments(parser, "NAME.apiprof")
    program = Program.from_args(args, ".apiprof")
    return launch("apiprof run", program, producer, quiet=args.quiet)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import signal
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Protocol

from ._profile_file import per_process_path
from .errors import UsageError


class Producer(Protocol):
    """What a command plugs into ``launch``. ``start()`` runs just before the program,
    ``stop()`` just after it (also when it raised, was interrupted by SIGINT or ended by
    SIGTERM), ``save()`` then writes the profile (OSError is reported, exit status 1),
    and ``summary()`` is printed on stderr unless quiet."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def save(self, output: str) -> None: ...

    def summary(self) -> str: ...


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so the program unwinds and the profile is written."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@dataclass
class _Launched:
    """The launch in progress, for the fork handler: the SIGTERM handler it replaced and
    where its profile goes (changed in a forked child)."""

    previous_sigterm: Any
    base: str
    output: str
    child: bool = False


_current: _Launched | None = None


def _after_fork_in_child() -> None:
    launched = _current
    if launched is None:
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _terminate:
            signal.signal(signal.SIGTERM, launched.previous_sigterm)
    except ValueError:  # forked from a thread that is not the main one: no handler to reset
        pass
    launched.output = per_process_path(launched.base, os.getpid())
    launched.child = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def add_program_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    """The options every launching command has: -o, -q, -m MODULE and the script."""
    parser.add_argument("-o", "--output", metavar="FILE",
                        help=f"profile file to write (default: {default_output} in the current "
                             "directory)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no report at exit")
    parser.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [args]",
                        help="run a library module as a script (the rest are its arguments)")
    parser.add_argument("target", nargs=argparse.REMAINDER,
                        help="script.py [args ...] or module args")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Program:
    """The program to run: ``kind`` "script" or "module", its ``argv`` (``argv[0]`` the
    script or module), and the absolute ``output`` path of its profile."""

    kind: str
    argv: list[str]
    output: str

    @classmethod
    def from_args(cls, args: argparse.Namespace, suffix: str) -> Program:
        """Checks the program and the output (``args.module``, ``args.target``,
        ``args.output``; default NAME + ``suffix``) and sets ``sys.path[0]`` as python
        would. UsageError on a mistake."""
        if args.module is not None:
            if not args.module:
                raise UsageError("-m needs a module name")
            kind, argv, name = "module", [*args.module, *args.target], args.module[0]
        else:
            if not args.target:
                raise UsageError("give a script to run, or -m MODULE")
            script = args.target[0]
            if not os.path.isfile(script):
                raise UsageError(f"cannot run {script}: no such file")
            if not os.access(script, os.R_OK):
                raise UsageError(f"cannot run {script}: not readable")
            kind, argv = "script", list(args.target)
            name = os.path.splitext(os.path.basename(script))[0] or "script"
        # sys.path[0] as python sets it: the current directory for -m, else the script's.
        first = os.getcwd() if kind == "module" else os.path.dirname(os.path.abspath(argv[0]))
        sys.path[0:1] = [first]
        if kind == "module" and not _importable(name):
            raise UsageError(f"no module named {name!r}")
        output = os.path.abspath(args.output or f"{name}{suffix}")
        out_dir = os.path.dirname(output)
        if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
            raise UsageError(f"cannot write {args.output or output}: directory is missing or "
                             "read-only")
        import pkgutil  # noqa: F401  (runpy imports it lazily: not part of the program's profile)

        return cls(kind, argv, output)


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


def execute(program: Program, prepare: Callable[[CodeType], None] | None = None) -> int:
    """Run the program like ``python`` would; returns its exit status. With
    ``prepare``, a script is compiled first and ``prepare`` sees its code."""
    argv = program.argv
    sys.argv[:] = argv
    try:
        if program.kind == "module":
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
    except Terminated:
        return 128 + signal.SIGTERM
    except BaseException:  # the program's own error: shown as python shows it
        traceback.print_exc()
        return 1
    return 0


def launch(command: str, program: Program, producer: Producer, *, quiet: bool = False,
           prepare: Callable[[CodeType], None] | None = None) -> int:
    """Runs ``program`` under ``producer`` and writes its profile; returns the program's
    exit status (1 if the profile cannot be written and the program succeeded).
    ``command`` names the command in messages."""
    global _current
    previous: Any = signal.signal(signal.SIGTERM, _terminate)
    launched = _current = _Launched(previous, program.output, program.output)
    producer.start()
    try:
        status = execute(program, prepare)
    finally:
        producer.stop()
        _current = None
        if not launched.child:
            signal.signal(signal.SIGTERM, previous)
    output = launched.output
    try:
        producer.save(output)
    except OSError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return status or 1
    if not quiet:
        if not launched.child:
            sys.stderr.write("\n" + producer.summary())
        sys.stderr.write(f"apiprof: wrote {output} (apiprof report {output})\n")
    return status
