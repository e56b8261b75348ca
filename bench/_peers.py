"""Benchmark peers (yappi, line_profiler, ...): installed into the running interpreter's
environment with pip when missing. They are what apiprof is measured against, not
dependencies of apiprof; one that does not install on this Python is reported absent."""

from __future__ import annotations

import importlib.util
import subprocess
import sys


def ensure_peers(peers: dict[str, str]) -> list[str]:
    """Install each missing module of ``peers`` (module name -> pip package); the
    modules that are still missing afterwards, in order."""
    absent = []
    for mod, pkg in peers.items():
        if importlib.util.find_spec(mod) is None:
            print(f"installing benchmark peer into {sys.prefix}: {pkg}", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", pkg], check=False)
            importlib.invalidate_caches()
            if importlib.util.find_spec(mod) is None:
                absent.append(mod)
    return absent
