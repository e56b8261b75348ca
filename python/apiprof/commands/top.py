"""``apiprof top PID``: a live view of where a running Python process spends its time,
refreshed every interval, from apiprof-spy's samples (nothing changes in the process)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from .. import _spy
from ..errors import UsageError

CLEAR = "\x1b[H\x1b[2J"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top", help="live view of a running Python process's hottest functions",
        description="Sample a running CPython 3.11-3.15 process from outside (apiprof-spy) and "
                    "show, every interval, its functions by share of samples: own (the "
                    "function itself was running) and total (it was on the stack). On a "
                    "terminal the view refreshes in place; otherwise one table per interval. "
                    "Ctrl-C stops.",
    )
    p.add_argument("pid", type=int, help="process id of the Python process")
    p.add_argument("-r", "--rate", type=float, default=_spy.DEFAULT_RATE, metavar="RATE",
                   help=f"samples per second (default {_spy.DEFAULT_RATE:g})")
    p.add_argument("-i", "--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds per refresh (default 1)")
    p.add_argument("-n", "--count", type=int, metavar="N", help="stop after N refreshes")
    p.add_argument("--idle", action="store_true",
                   help="also count threads that are not running")
    p.add_argument("--subprocesses", action="store_true",
                   help="also sample every Python descendant (workers)")
    p.set_defaults(func=run)


def render(pid: int, frame: dict[str, Any], width: int, rows: int) -> str:
    """One refresh as text: a header line and the function table."""
    ticks = max(int(frame["ticks"]), 1)
    lines = [f"apiprof top {pid}: {frame['elapsed']:.1f} s, {frame['processes']} process(es), "
             f"{frame['threads']} thread(s) sampled, {frame['ticks']} ticks in the last interval",
             f"{'own %':>7} {'total %':>8} {'cpu ms':>8}  function"]
    for fn in frame["functions"][:max(rows, 1)]:
        where = f"{fn['qualname']} ({os.path.basename(fn['file'])}:{fn['line']})"
        line = (f"{100 * fn['own'] / ticks:>7.1f} {100 * fn['total'] / ticks:>8.1f} "
                f"{fn['cpu_ns'] / 1e6:>8.1f}  {where}")
        lines.append(line[:width])
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    _spy.check_rate(args.rate)
    if not 0.1 <= args.interval <= 3600:
        raise UsageError("-i: expected seconds from 0.1 to 3600")
    if args.count is not None and args.count < 1:
        raise UsageError("-n: expected a positive number of refreshes")
    cmd = [str(_spy.spy_binary()), "top", str(args.pid), "-r", f"{args.rate:g}",
           "--interval", f"{args.interval:g}"]
    cmd += (["--count", str(args.count)] if args.count else []) + (
        ["--idle"] if args.idle else []) + (["--subprocesses"] if args.subprocesses else [])
    tty = sys.stdout.isatty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in proc.stdout:
            size = shutil.get_terminal_size()
            text = render(args.pid, json.loads(line), size.columns if tty else 200,
                          size.lines - 3 if tty else 40)
            sys.stdout.write(CLEAR + text if tty else text + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    status = proc.wait()
    if status not in (0, -signal.SIGINT):
        print(f"apiprof top: {_spy.message(err)}", file=sys.stderr)
        return status
    return 0
