"""Reading a profile file for a command: the one mapping of load errors to UsageError."""

from __future__ import annotations

import os
from typing import Any

from . import _core
from .errors import UsageError


def load_profile(path: str) -> Any:
    """The profile in ``path`` (``_core.load``). UsageError when it is a directory, cannot
    be read (the OSError's message) or is not an apiprof profile."""
    if os.path.isdir(path):
        raise UsageError(f"cannot read {path}: is a directory")
    try:
        return _core.load(path)
    except OSError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(f"not a readable apiprof profile: {e}") from None
