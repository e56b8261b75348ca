"""``apiprof attach PID``: sample a running Python process from outside (apiprof-spy)
and write its profile; the process is neither stopped nor changed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import _spy
from .._output import output_path
from ..errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "attach", help="sample a running Python process (no code change, no pause)",
        description="Sample every thread of a running CPython 3.11-3.15 process from outside "
                    "with apiprof-spy and write the profile (apiprof report reads it). "
                    "Stops after -d seconds, when the process exits, or on Ctrl-C; the file "
                    "is written in every case.",
    )
    p.add_argument("pid", type=int, help="process id of the Python process")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS",
                   help="sample for this long (default: until the process exits or Ctrl-C)")
    p.add_argument("-r", "--rate", type=float, default=_spy.DEFAULT_RATE, metavar="RATE",
                   help=f"samples per second (default {_spy.DEFAULT_RATE:g})")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the profile to write (default apiprof-PID.apiprof)")
    p.add_argument("--idle", action="store_true",
                   help="also keep samples of threads that are not running (waiting on I/O, "
                        "a lock or a sleep); they give wall time, running ones CPU time")
    p.add_argument("--subprocesses", action="store_true",
                   help="also sample every Python descendant of PID (uvicorn --workers, "
                        "gunicorn), those started later too; each labelled pid=N")
    p.add_argument("--async", dest="async_chains", action="store_true",
                   help="also sample each asyncio task that waits in an await: its await "
                        "chain, down to what it awaits (thread 'awaiting')")
    p.add_argument("--requests", action="store_true",
                   help="label the samples of each request of apiprof's middleware with its "
                        "number (request=N; apiprof report --request N)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _spy.check_rate(args.rate)
    if args.duration is not None and not args.duration > 0:
        raise UsageError("-d: expected a positive number of seconds")
    output = os.path.abspath(args.output or f"apiprof-{args.pid}.apiprof")
    try:
        with output_path(output) as path:
            _spy.record(args.pid, path, args.rate, args.duration, args.idle,
                        subprocesses=args.subprocesses, async_chains=args.async_chains,
                        requests=args.requests)
    except _spy.SpyError as e:
        print(f"apiprof attach: {e}", file=sys.stderr)
        return e.status
    print(f"apiprof: wrote {output} (apiprof report {output})", file=sys.stderr)
    return 0
