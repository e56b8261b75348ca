"""The per-worker route statistics files of a stats directory: write this worker's, merge all.

Each worker process writes its table (the C encoding of src/core/ap_routes.h) to
``DIR/apiprof-routes-<host>-<pid>.bin``, replacing the file atomically; readers merge
every such file in DIR. A dead worker's file keeps its final figures, so totals over a
deployment stay exact across restarts; start from an empty directory to start afresh.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .. import _core

FILE_PREFIX = "apiprof-routes-"
FILE_SUFFIX = ".bin"


def worker_file(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / f"{FILE_PREFIX}{socket.gethostname()}-{os.getpid()}{FILE_SUFFIX}"


def write_worker_file(directory: str | os.PathLike[str], table: _core.RouteTable) -> Path:
    """Writes this process's ``table`` to its file in ``directory`` (atomic replace)."""
    path = worker_file(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(table.encode())
    os.replace(tmp, path)
    return path


def read_dir(directory: str | os.PathLike[str]) -> tuple[_core.RouteTable, list[Path]]:
    """Merges every worker file in ``directory``. Raises OSError if it cannot be read and
    ValueError naming the file if one is corrupt."""
    merged = _core.RouteTable(1_000_000)
    files = sorted(
        p for p in Path(directory).iterdir()
        if p.name.startswith(FILE_PREFIX) and p.name.endswith(FILE_SUFFIX)
    )
    for path in files:
        try:
            merged.merge(path.read_bytes())
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return merged, files
