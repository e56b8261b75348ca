"""The apiprof command line. Each command is a module in apiprof.commands with
``add_parser(subparsers)`` (which sets ``func``) and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from . import __version__
from .errors import UsageError

# Command name -> module in apiprof.commands, in the order `apiprof --help` lists them.
COMMANDS: dict[str, str] = {
    "run": "run",
    "lines": "lines",
    "report": "report",
    "diff": "diff",
    "bench": "bench",
    "check": "check",
    "stats": "stats",
    "investigate": "investigate",
    "attach": "attach",
    "dump": "dump",
    "top": "top",
}


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line on one line (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="apiprof", description="Profiler for FastAPI and other ASGI services."
    )
    parser.add_argument("--version", action="version", version=f"apiprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"apiprof.commands.{module}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit code. A user mistake prints one line
    on stderr and exits 2; Ctrl-C exits 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"apiprof {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
