"""The per-worker route statistics files of a stats directory: write this worker's, merge all.

Each worker process writes its table (the C encoding of src/core/ap_routes.h) to
``DIR/apiprof-routes-<host>-<pid>.bin``, replacing the file atomically; readers merge
every such file in DIR. A dead worker's file keeps its final figures, so totals over a
deployment stay exact across restarts; start from an empty directory to start afresh.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from .. import _core

FILE_PREFIX = "apiprof-routes-"
FILE_SUFFIX = ".bin"
# Largest worker file read (docs/asgi.md): a table at the middleware's route limit is far
# smaller; anything bigger is not one of ours.
FILE_BYTES_MAX = 64 << 20
# Keys a merge of a directory keeps (docs/asgi.md): each costs about 41 KB (its histogram),
# so a valid file of 20,000 routes would take 800 MB; further keys are counted in the
# overflow entries, as in a worker.
MERGED_KEYS_MAX = 2048


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
    """Merges every worker file in ``directory``. Raises OSError if the directory cannot be
    read, and ValueError naming the file when one is not a regular file, is larger than
    ``FILE_BYTES_MAX``, cannot be read or is corrupt."""
    merged = _core.RouteTable(MERGED_KEYS_MAX)
    files = sorted(
        p for p in Path(directory).iterdir()
        if p.name.startswith(FILE_PREFIX) and p.name.endswith(FILE_SUFFIX)
    )
    for path in files:
        data = read_worker_file(path)
        try:
            merged.merge(data)
        except ValueError as e:
            raise ValueError(f"corrupt statistics file {path}: {e}") from None
    return merged, files


def read_worker_file(path: Path) -> bytes:
    """The bytes of one worker file: a regular file (not followed through a link, never
    waited on like a FIFO) of at most ``FILE_BYTES_MAX`` bytes. ValueError naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise ValueError(f"statistics file {path}: {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"statistics file {path}: not a regular file")
        if st.st_size > FILE_BYTES_MAX:
            raise ValueError(f"statistics file {path}: {st.st_size} bytes, more than the "
                             f"limit of {FILE_BYTES_MAX}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(FILE_BYTES_MAX + 1)
    except OSError as e:
        raise ValueError(f"statistics file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > FILE_BYTES_MAX:
        raise ValueError(f"statistics file {path}: more than {FILE_BYTES_MAX} bytes")
    return data
