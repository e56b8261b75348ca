"""Worker processes of ``apiprof run``: children started with multiprocessing's spawn
method (uvicorn ``--workers``) are traced too, and at the end every child's profile
(forked ones included, gunicorn's) is merged into the ``-o`` profile, labelled ``pid``.

The run keeps a private directory: the launcher that spawned children are started
through (``multiprocessing.set_executable``), and one empty file per child pid, so the
merge takes the files of this run's children only. A child's profile goes to
``NAME.<pid>.apiprof`` beside ``-o`` (checkpoints, then the final save) and stays there.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import _core
from ._profile_file import per_process_path, save_profile

ENV = "APIPROF_RUN_CHILD"
PID_LABEL = "pid"


@dataclass
class WorkerRun:
    """One ``apiprof run``'s worker bookkeeping, made in the parent by ``begin``."""

    directory: str
    output: str
    parent: int
    previous_executable: str


_run: WorkerRun | None = None


def begin(output: str, options: dict[str, Any], checkpoint: bool) -> WorkerRun:
    """Spawned children of this process start traced with ``options`` (Profiler
    keyword arguments) and checkpoint to their own file when ``checkpoint``."""
    global _run
    directory = tempfile.mkdtemp(prefix="apiprof-run-")
    launcher = os.path.join(directory, "python")
    with open(launcher, "w") as f:
        f.write("#!/bin/sh\nexec " + shlex.quote(sys.executable)
                + " -c 'from apiprof._workers import child_main; child_main()' \"$@\"\n")
    os.chmod(launcher, 0o700)
    os.environ[ENV] = json.dumps({"directory": directory, "output": output,
                                  "options": options, "checkpoint": checkpoint})
    from multiprocessing import spawn
    previous = spawn.get_executable()
    multiprocessing.set_executable(launcher)
    _run = WorkerRun(directory, output, os.getpid(), previous or sys.executable)
    return _run


def end(run: WorkerRun, merge_into_output: bool = True) -> list[int]:
    """Back to the plain interpreter for spawned children, the run's directory removed;
    merges every child profile of the run into its output (see ``merge``; not when
    ``merge_into_output`` is false) and returns the merged pids. OSError or ValueError
    when the output cannot be read or written (it then holds the parent's profile)."""
    global _run
    _run = None
    multiprocessing.set_executable(run.previous_executable)
    os.environ.pop(ENV, None)
    try:
        pids = sorted(int(name) for name in os.listdir(run.directory) if name.isdigit())
    finally:
        shutil.rmtree(run.directory, ignore_errors=True)
    found = [(pid, path) for pid in pids
             if os.path.isfile(path := per_process_path(run.output, pid))]
    if not found or not merge_into_output:
        return []
    return merge(run.output, run.parent, found)


def _note_child(directory: str) -> None:
    """Marks this process as a child of the run (its pid's file in the directory)."""
    try:
        with open(os.path.join(directory, str(os.getpid())), "w"):
            pass
    except OSError:  # the run has ended: nothing will merge this child
        pass


def _after_fork_in_child() -> None:
    if _run is not None and os.getpid() != _run.parent:
        _note_child(_run.directory)


os.register_at_fork(after_in_child=_after_fork_in_child)


def merge(output: str, parent: int, children: list[tuple[int, str]]) -> list[int]:
    """Rewrites ``output`` as its profile plus every child profile, each tree labelled
    ``pid=<its process>`` (the parent's too): each child's trees, route latency and
    queries join the parent's (``Profile.absorb``); its stalls and timeline do not. A
    child file that cannot be read is left out with a line on stderr. Returns the pids
    merged."""
    profile = _core.load(output)
    profile.label_all(PID_LABEL, str(parent))
    merged = []
    for pid, path in children:
        try:
            child = _core.load(path)
        except (OSError, ValueError) as e:
            print(f"apiprof: left out worker {pid}'s profile {path}: {e}", file=sys.stderr)
            continue
        profile.absorb(child, PID_LABEL, str(pid))
        merged.append(pid)
    profile.set_meta("workers", ",".join(str(pid) for pid in merged))
    save_profile(profile, output)
    return merged


def _split_command(args: list[str]) -> tuple[str, list[str]] | None:
    """``[flags...] -c CODE rest...`` as multiprocessing starts a child: CODE and rest
    (the interpreter's flags are dropped; -X and -W take a value)."""
    i = 0
    while i < len(args) and args[i] != "-c":
        i += 2 if args[i] in ("-X", "-W") else 1
    if i + 1 >= len(args):
        return None
    return args[i + 1], args[i + 2:]


def child_main() -> None:
    """The launcher's entry: runs multiprocessing's ``-c CODE`` as ``python`` would, traced
    when it is a spawned child of an ``apiprof run`` (else as is: the resource tracker)."""
    split = _split_command(sys.argv[1:])
    if split is None:
        print("apiprof: the worker launcher wants -c CODE", file=sys.stderr)
        sys.exit(2)
    code, rest = split
    sys.argv[:] = ["-c", *rest]
    spec = os.environ.pop(ENV, None)
    program = compile(code, "<string>", "exec")
    namespace = sys.modules["__main__"].__dict__
    if spec is None or "--multiprocessing-fork" not in rest:
        exec(program, namespace)
        return
    config = json.loads(spec)
    from ._labels import install_uvicorn_hook
    from ._profiler import Profiler

    output = per_process_path(config["output"], os.getpid())
    _note_child(config["directory"])
    profiler = Profiler(**config["options"],
                        checkpoint=output if config["checkpoint"] else None)
    done = False

    def finish() -> None:
        nonlocal done
        if done:
            return
        done = True
        profiler.stop()
        try:
            profiler.save(output)
        except OSError as e:
            print(f"apiprof: {e}", file=sys.stderr)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Write the profile, then end by SIGTERM as the child would without apiprof.
        finish()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    install_uvicorn_hook()
    profiler.start()
    try:
        exec(program, namespace)
    finally:
        finish()
