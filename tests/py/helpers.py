"""Paths and small helpers shared by the Python tests."""

from __future__ import annotations

import subprocess
import time
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
