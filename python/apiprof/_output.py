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
def output_path(path: str, unnamed: bool = False) -> Iterator[str]:
    """The path to hand to a writer for ``-o path``: a new file beside ``path`` that is
    renamed over it when the block ends without an error (removed otherwise), or ``path``
    itself when it names something other than a regular file. UsageError (one line) for
    a directory, a socket, a dangling symbolic link or a directory that cannot be
    written.

    ``unnamed``: for a writer in this process only (the path handed out may be
    /proc/self/fd/N), the new file has no name until it is complete, so a process
    killed while writing (SIGKILL, the OOM killer) leaves no stray file beside ``path``.
    Where the system has no unnamed files, a named one as above."""
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
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    fd = _anonymous_file(directory or ".", mode) if unnamed else None
    if fd is not None:
        try:
            yield f"/proc/self/fd/{fd}"
            tmp = _link_beside(fd, directory or ".", name)
            try:
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        finally:
            os.close(fd)
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    try:
        # The mode the file would have had: the replaced file's, else 0666 less the umask.
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _anonymous_file(directory: str, mode: int) -> int | None:
    """An unnamed regular file in ``directory`` (Linux O_TMPFILE, reopened by writers
    through /proc/self/fd), or None where the system or the file system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, mode)
    except OSError:
        return None
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        return None
    return fd


def _link_beside(fd: int, directory: str, name: str) -> str:
    """Give the unnamed file ``fd`` a new hidden name in ``directory``; that name."""
    # linkat(AT_SYMLINK_FOLLOW) links the file the /proc link names; os.link uses it only
    # when given a directory fd (the path is absolute, so the fd itself does not matter).
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(100):
            tmp = os.path.join(directory, f".{name}.{os.urandom(4).hex()}.tmp")
            try:
                os.link(f"/proc/self/fd/{fd}", tmp, src_dir_fd=root, follow_symlinks=True)
                return tmp
            except FileExistsError:
                continue
    finally:
        os.close(root)
    raise FileExistsError(f"no free temporary name beside {name}")


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
