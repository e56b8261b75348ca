"""Runs the C sampler apiprof-spy (src/spy) for ``apiprof attach``, ``dump`` and
``run --sample``: finds it, hands it the options, turns its exit status into one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .errors import UsageError

DEFAULT_RATE = 100.0

# apiprof-spy's exit statuses for failures a user can act on (docs/sampler.md).
EXIT_PERM, EXIT_NOPROC, EXIT_NOT_PYTHON, EXIT_VERSION = 3, 4, 5, 6


class SpyError(Exception):
    """apiprof-spy failed; ``status`` is its exit status, the message its one line."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def spy_binary() -> Path:
    """The apiprof-spy executable: $APIPROF_SPY, else the one installed in apiprof/bin."""
    override = os.environ.get("APIPROF_SPY")
    path = Path(override) if override else Path(__file__).resolve().parent / "bin" / (
        "apiprof-spy")
    if not path.is_file():
        raise SpyError(f"apiprof-spy not found at {path} (reinstall apiprof)", 1)
    return path


def check_rate(rate: float) -> None:
    if not 1 <= rate <= 10000:
        raise UsageError(f"-r: expected a rate from 1 to 10000 per second, got {rate:g}")


def message(stderr: str) -> str:
    """apiprof-spy's last line without its program prefix."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else "failed"
    return last.removeprefix("apiprof-spy: ")


def dump(pid: int, json_out: bool) -> str:
    """Every thread's stack of process pid once, as apiprof-spy prints it."""
    cmd = [str(spy_binary()), "dump", str(pid), *(["--json"] if json_out else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SpyError(message(done.stderr), done.returncode)
    return done.stdout


def record(pid: int, output: str, rate: float, duration: float | None, idle: bool,
           quiet: bool = False, wait_start: bool = False, subprocesses: bool = False,
           phases: list[str] | None = None, async_chains: bool = False,
           requests: bool = False) -> str:
    """Samples process pid into the profile ``output`` until ``duration`` seconds pass,
    the process exits or Ctrl-C; returns apiprof-spy's summary line. ``wait_start``: the
    process was just started, wait for its interpreter; ``subprocesses``: also sample its
    Python descendants, those that start later too; ``phases``: label the samples
    phase=<first name>, and each SIGUSR1 this process gets (main thread) moves the
    sampler to the next name; ``async_chains``: also sample the await chain of each
    asyncio task that waits in an await; ``requests``: label the samples of each request
    of apiprof's middleware request=N. SpyError when it failed (the file is not written
    then)."""
    cmd = [str(spy_binary()), "record", str(pid), "-o", output, "-r", f"{rate:g}"]
    if duration is not None:
        cmd += ["-d", f"{duration:g}"]
    if idle:
        cmd.append("--idle")
    if wait_start:
        cmd.append("--wait-start")
    if subprocesses:
        cmd.append("--subprocesses")
    if async_chains:
        cmd.append("--async")
    if requests:
        cmd.append("--requests")
    previous = None
    if phases:
        cmd += ["--phases", ",".join(phases)]
        # The sampler starts with SIGUSR1 blocked and unblocks it once it handles it,
        # so a switch sent while it starts waits instead of ending it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        if phases:   # one that came meanwhile is passed on when unblocked
            previous = signal.signal(signal.SIGUSR1,
                                     lambda s, f: proc.send_signal(signal.SIGUSR1))
    finally:
        if phases:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    # SIGTERM stops the sampler as SIGINT does (it writes the profile), also when this
    # process ignores SIGINT (started in the background by a shell)
    previous_term = signal.signal(signal.SIGTERM, lambda s, f: proc.send_signal(signal.SIGINT))
    try:
        while True:
            try:
                _, err = proc.communicate()
                break
            except KeyboardInterrupt:
                # Ctrl-C reaches the whole process group; a SIGINT sent to this process
                # alone is passed on, so the sampler always stops and writes.
                proc.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
    if proc.returncode != 0:
        raise SpyError(message(err), proc.returncode)
    for line in [ln for ln in err.splitlines() if ln.strip()][:-1]:   # notes on the way
        print(f"apiprof: {line.removeprefix('apiprof-spy: ')}", file=sys.stderr)
    summary = message(err).split("; wrote ")[0]   # the caller names the final file
    if not quiet:
        print(f"apiprof: {summary}", file=sys.stderr)
    return summary
