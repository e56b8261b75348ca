"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` binaries
(/usr/lib/postgresql/*/bin, ``make system-deps``), a cluster initdb'd in a temporary
directory, ``postgres`` on 127.0.0.1 on a free port with trust authentication, run as the
current user or, under root (which postgres refuses), as the ``postgres`` user. One server
serves a whole test session (the ``postgres`` fixture of conftest.py)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

USER = "apiprof"
START_TIMEOUT_S = 30.0


class NoServerUser(RuntimeError):
    """Running as root with no ``postgres`` user to run the server as."""


def bin_dir() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """``postgres`` on 127.0.0.1:port; ``dsn`` is a libpq URL for database ``postgres``."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir, self.port = bindir, port
        self.dsn = f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        self.root = Path(tempfile.mkdtemp(prefix="apiprof-pg-"))
        self.data, self.log_path = self.root / "data", self.root / "server.log"
        self.run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:   # postgres will not run as root
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise NoServerUser("running as root and there is no user 'postgres' to run "
                                   "the server as") from None
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    def _user(self) -> dict[str, object]:
        # PostgreSQL's programs run without the sanitizer runtime `make sanitize` preloads
        # (initdb hangs under it)
        env = {"env": {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}}
        if self.run_as is None:
            return env
        return {**env, "user": self.run_as.pw_uid, "group": self.run_as.pw_gid,
                "extra_groups": []}

    def start(self) -> None:
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                        "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, capture_output=True, cwd=self.root, timeout=120,
                       **self._user())
        # quick and small: no durability, sockets in the cluster's own directory
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                 "-p", str(self.port), "-k", str(self.root), "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root, start_new_session=True, **self._user())
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                              str(self.port), "-U", USER], **self._user()).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 10 s; the cluster is removed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
