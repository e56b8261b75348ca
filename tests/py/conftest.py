"""Real-server harness: run an ASGI app under uvicorn in a subprocess on an ephemeral port.

    def test_x(serve, http):
        server = serve("shop.app:app", cwd=SHOP_DIR, env={"SHOP_DB": str(tmp_path / "s.db")})
        assert http.get(f"{server.url}/health").status_code == 200

At teardown every server the test did not stop itself is stopped (SIGINT, then SIGTERM,
then SIGKILL) and the test fails if the server had crashed: an exit code other than that
of a clean shutdown, or a "Traceback" in its log. A test that calls ``server.stop()``
checks the outcome itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import REPO_ROOT, SHOP_DIR

__all__ = ["CLEAN_EXIT_CODES", "REPO_ROOT", "SHOP_DIR", "Server", "free_port"]

START_TIMEOUT_S = 30.0
# uvicorn exits 0 after SIGINT; after SIGTERM it shuts down and re-raises the signal.
CLEAN_EXIT_CODES = frozenset({0, -signal.SIGINT, -signal.SIGTERM})


_given_ports: set[int] = set()


def free_port() -> int:
    """A port free now, and not given before by this process: a port handed out is not
    bound until its server starts, and the kernel may offer it again meanwhile (the app
    and Prometheus of test_metrics once got the same one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given_ports:
            _given_ports.add(port)
            return port


class Server:
    """A uvicorn subprocess serving ``app`` (``"module:attr"``) on 127.0.0.1."""

    def __init__(
        self, app: str, cwd: Path, env: dict[str, str], log_path: Path, args: tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.checked = False  # outcome already handled: by the test, or by a failed start
        self.returncode: int | None = None
        cmd = [
            python, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *args,
        ]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, health: str = "/", timeout: float = START_TIMEOUT_S) -> None:
        """Return once the server answers HTTP on ``health`` (any status); fail otherwise."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    pytest.fail(
                        f"{self.app} exited with code {code} before serving; log:\n{self.log()}",
                        pytrace=False,
                    )
                try:
                    client.get(self.url + health)
                    return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self._terminate()
                    pytest.fail(
                        f"{self.app} did not answer on {self.url}{health} within {timeout:.0f} s;"
                        f" log:\n{self.log()}",
                        pytrace=False,
                    )
                time.sleep(0.05)

    def stop(self) -> int:
        """SIGINT, then SIGTERM after 10 s, then SIGKILL after 5 s; returns the exit code."""
        self.checked = True
        return self._terminate()

    def _terminate(self) -> int:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    self.proc.send_signal(sig)
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        self.returncode = self.proc.wait()
        return self.returncode

    def crash_report(self) -> str | None:
        """Why the finished server counts as crashed, or None if it shut down cleanly."""
        log = self.log()
        if self.returncode not in CLEAN_EXIT_CODES:
            return f"server {self.app} crashed: exit code {self.returncode}; log:\n{log}"
        if "Traceback" in log:
            return f"server {self.app} logged a traceback; log:\n{log}"
        return None


ServeFactory = Callable[..., Server]


@contextmanager
def _serving(log_dir: Callable[[], Path]) -> Iterator[ServeFactory]:
    """The ``serve`` factory; on exit, stops its servers and fails if one had crashed."""
    servers: list[Server] = []

    def factory(
        app: str,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        health: str = "/",
        timeout: float = START_TIMEOUT_S,
        args: tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> Server:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_path = log_dir() / f"server-{len(servers)}.log"
        server = Server(app, Path(cwd or os.getcwd()), full_env, log_path, args, python)
        servers.append(server)
        try:
            server.wait_ready(health, timeout)
        except BaseException:
            server.checked = True  # the failure to start is the report
            server._terminate()
            raise
        return server

    try:
        yield factory
    finally:
        problems = []
        for server in servers:
            if server.checked:
                continue
            server._terminate()
            problem = server.crash_report()
            if problem:
                problems.append(problem)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """Factory: ``serve(app, cwd=None, env=None, health="/", timeout=30, args=(),
    python=sys.executable) -> Server``.

    ``app`` is ``"module:attr"`` importable from ``cwd`` (default: the current directory);
    ``env`` is added to the inherited environment; ``args`` go to uvicorn (``--workers``);
    the log is ``tmp_path/server-N.log``.
    Returns once the server answers HTTP on ``health``.
    """
    with _serving(lambda: tmp_path) as factory:
        yield factory


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFactory]:
    """``serve`` for servers shared by a whole test module (crashes fail its last test)."""
    with _serving(lambda: tmp_path_factory.mktemp("server")) as factory:
        yield factory


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        yield client


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server on 127.0.0.1 for the whole session (tests/py/pgserver.py): its
    ``dsn`` reaches database ``postgres`` as a superuser. Skips when the server binaries
    are not installed (``make system-deps`` installs Debian's ``postgresql``)."""
    from pgserver import NoServerUser, PostgresServer, bin_dir  # only when asked for

    bindir = bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/*/bin; make system-deps)")
    try:
        server = PostgresServer(bindir, free_port())
    except NoServerUser as e:
        pytest.skip(str(e))
    try:
        server.start()
        yield server
    finally:
        server.stop()
