"""Reading and writing a profile file for a command: the one mapping of load errors to
UsageError, the one save path (atomic over regular files) and the checkpoint marker."""

from __future__ import annotations

import os
import sys
from typing import Any

from . import _core
from ._output import output_path
from .errors import UsageError

# Metadata a checkpoint carries: what the profile is (a run cut before its end) and lacks.
CUT_META = "cut"


def load_profile(path: str) -> Any:
    """The profile in ``path`` (``_core.load``). UsageError when it is a directory, cannot
    be read (the OSError's message) or is not an apiprof profile. A checkpoint of a run
    that did not end (killed) is read, with one note on stderr saying what it lacks."""
    if os.path.isdir(path):
        raise UsageError(f"cannot read {path}: is a directory")
    try:
        profile = _core.load(path)
    except OSError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(f"not a readable apiprof profile: {e}") from None
    cut = profile.meta.get(CUT_META, "")
    if cut:
        print(f"apiprof: {path} was cut: {cut}", file=sys.stderr)
    return profile


def save_profile(profile: Any, path: str) -> None:
    """Write ``profile``'s native file to ``path``, the one way every profile is saved.

    A regular file (or a new name) is replaced atomically: the profile is written to a
    new file in the same directory and renamed over it, so a reader or a kill at any
    moment sees the old complete file or the new complete one. The new file has no
    name while it is written (Linux), so a kill then leaves no stray file either. A
    symlink is resolved first (the file it names is replaced, not the link). Anything
    else (a FIFO, a device such as /dev/null) is written through, never replaced by a
    regular file.
    OSError on failure (the old file is then left as it was)."""
    target = os.path.realpath(path)
    try:
        with output_path(target, unnamed=True) as where:   # the one rule for -o paths
            try:
                profile.save(where)
            except OSError as e:   # name the file asked for, not /proc/self/fd/N
                raise OSError(str(e).replace(where, target)) from None
    except UsageError as e:
        raise OSError(str(e)) from None


def per_process_path(path: str, pid: int) -> str:
    """The file of a forked child's profile: ``name.<pid>.ext`` beside ``path``."""
    root, ext = os.path.splitext(path)
    return f"{root}.{pid}{ext}"
