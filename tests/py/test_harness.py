"""The real-server harness itself (conftest.py): start, fail to start, stop, crash detection."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import CLEAN_EXIT_CODES
from helpers import REPO_ROOT

OK_APP = '''
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    yield
    marker = os.environ.get("SHUTDOWN_MARKER")
    if marker:
        Path(marker).write_text("clean shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/")
def root():
    return {"hello": "world"}


@app.get("/boom")
def boom():
    raise ValueError("handler failed")
'''


def write_app(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_server_starts_and_answers(serve, http, tmp_path):
    write_app(tmp_path, "okapp", OK_APP)
    server = serve("okapp:app", cwd=tmp_path)
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.proc.poll() is None
    resp = http.get(f"{server.url}/")
    assert resp.status_code == 200
    assert resp.json() == {"hello": "world"}
    assert server.log_path.parent == tmp_path


def test_app_failing_at_import_fails_serve_with_its_log(serve, tmp_path):
    write_app(tmp_path, "crashapp", 'raise RuntimeError("broken at import")\n')
    with pytest.raises(pytest.fail.Exception) as failure:
        serve("crashapp:app", cwd=tmp_path)
    message = str(failure.value)
    assert "exited with code" in message
    assert "RuntimeError: broken at import" in message


def test_stop_after_sigint_is_clean(serve, tmp_path):
    write_app(tmp_path, "okapp", OK_APP)
    marker = tmp_path / "shutdown.txt"
    server = serve("okapp:app", cwd=tmp_path, env={"SHUTDOWN_MARKER": str(marker)})
    started = time.monotonic()
    code = server.stop()
    assert code == 0
    assert code in CLEAN_EXIT_CODES
    assert time.monotonic() - started < 10, "needed more than SIGINT to stop"
    assert marker.read_text() == "clean shutdown"  # the lifespan shutdown ran
    assert server.crash_report() is None


def test_killed_server_has_crash_report(serve, tmp_path):
    write_app(tmp_path, "okapp", OK_APP)
    server = serve("okapp:app", cwd=tmp_path)
    os.kill(server.proc.pid, signal.SIGKILL)
    assert server.stop() == -signal.SIGKILL
    report = server.crash_report()
    assert report is not None and "exit code -9" in report


INNER_TESTS = '''
import os
import signal


def test_killed_externally(serve, tmp_path):
    server = serve("okapp:app", cwd=os.environ["APP_DIR"])
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def test_traceback_in_log(serve, http):
    server = serve("okapp:app", cwd=os.environ["APP_DIR"])
    assert http.get(server.url + "/boom").status_code == 500


def test_clean(serve, http):
    server = serve("okapp:app", cwd=os.environ["APP_DIR"])
    assert http.get(server.url + "/").status_code == 200
'''


def test_teardown_reports_killed_and_failing_servers(tmp_path):
    """Runs a separate pytest session with this conftest: crashes must fail at teardown."""
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(REPO_ROOT / "tests" / "py" / name, suite / name)
    write_app(tmp_path, "okapp", OK_APP)
    (suite / "test_inner.py").write_text(INNER_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", suite,
         str(suite)],
        cwd=suite, env={**os.environ, "APP_DIR": str(tmp_path), "PYTEST_ADDOPTS": ""},
        capture_output=True, text=True, timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "3 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_killed_externally" in out, out
    assert "crashed: exit code -9" in out, out
    assert "ERROR at teardown of test_traceback_in_log" in out, out
    assert "logged a traceback" in out and "ValueError: handler failed" in out, out
