"""The one rule for every file a command writes at ``-o PATH`` (reports, exports, bench
results): a regular file, or a name not yet taken, is written beside it and renamed over
it, so a reader never sees half a file; anything else (a FIFO, a device such as
/dev/null, a symbolic link such as /dev/stdout) is written through, never replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator

from .errors import UsageError


@contextlib.contextmanager
def output_path(path: str) -> Iterator[str]:
    """The path to hand to a writer for ``-o path``: a new file beside ``path`` that is
    renamed over it when the block ends without an error (removed otherwise), or ``path``
    itself when it names something other than a regular file. UsageError (one line) for
    a directory, a socket, a dangling symbolic link or a directory that cannot be
    written."""
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            raise UsageError(f"cannot write {path}: a symbolic link to nothing") from None
        if stat.S_ISDIR(target.st_mode):
            raise UsageError(f"cannot write {path}: is a directory")
        if stat.S_ISSOCK(target.st_mode):
            raise UsageError(f"cannot write {path}: is a socket")
        yield path
        return
    directory, name = os.path.split(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    try:
        # The mode the file would have had: the replaced file's, else 0666 less the umask.
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it (Linux; a checkpoint thread may save
    while another thread creates files), else the common 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
