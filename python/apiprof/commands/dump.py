"""``apiprof dump PID``: print the stack of every thread of a running Python process once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import _spy


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dump", help="print every thread's stack of a running Python process",
        description="Read every thread's stack of a running CPython 3.11-3.15 process once "
                    "from outside (apiprof-spy) and print it, innermost frame first, with "
                    "each frame's line; the process is not stopped.",
    )
    p.add_argument("pid", type=int, help="process id of the Python process")
    p.add_argument("--json", action="store_true",
                   help='print JSON: {"pid", "python", "threads": [{"tid", "name", "state", '
                        '"gil", "frames": [{"name", "qualname", "file", "line", '
                        '"firstlineno"}]}]}')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(_spy.dump(args.pid, args.json))
    except _spy.SpyError as e:
        print(f"apiprof dump: {e}", file=sys.stderr)
        return e.status
    return 0
