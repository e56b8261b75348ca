"""Paths and small helpers shared by the Python tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOP_DIR = REPO_ROOT / "examples" / "shop"


def wait_healthy(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path,
                 path: str = "/health", seconds: float = 60) -> None:
    """Wait until the server started as proc answers 200 on path; fail with its log if it
    exits first, or after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def serve_profiled(cmd: list[str], cwd: Path, env: dict[str, str], port: int, log_path: Path,
                   drive: Callable[[httpx.Client], None], health: str = "/health") -> None:
    """Run a server under a profiling command (``apiprof run -m uvicorn ...``), wait until
    it answers, ``drive(client)``, then stop it with SIGINT (the profile is written at exit)
    and fail with its log unless it exited 0."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              trust_env=False) as client:
                wait_healthy(client, proc, log_path, health)
                drive(client)
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log_path.read_text()
