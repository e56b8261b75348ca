"""`apiprof run` of a server with spawned worker processes (uvicorn --workers): every
worker is traced and merged into the one -o profile, each process's trees labelled pid
(gunicorn's forked workers: test_fork.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
from apiprof import _core
from conftest import free_port
from helpers import wait_healthy

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
REQUESTS = 12


def serve(tmp_path: Path, stop: signal.Signals, *server: str) -> tuple[Path, str, int]:
    """Runs ``server`` (with {port}) under `apiprof run`, sends REQUESTS to /items on
    fresh connections, stops it with ``stop``; returns the profile, the log, the pid."""
    port = free_port()
    out = tmp_path / "w.apiprof"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(APIPROF), "run", "-o", str(out),
             *(a.format(port=port) for a in server)],
            cwd=APPS, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              trust_env=False) as client:
                wait_healthy(client, proc, log_path)
            for i in range(REQUESTS):
                with httpx.Client(timeout=30, trust_env=False) as client:
                    assert client.get(f"http://127.0.0.1:{port}/items/{i}").status_code == 200
            proc.send_signal(stop)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out, log_path.read_text(), proc.pid


def calls(profile, name: str) -> int:
    return sum(f["calls"] for f in profile.functions() if f["qualname"] == name)


def pids(profile) -> set[int]:
    return {int(t["labels"]["pid"]) for t in profile.trees()}


def check_merged(out: Path, text: str, parent: int, workers: set[int]) -> None:
    assert "Traceback" not in text, text
    assert len(workers) == 2, text
    profile = _core.load(str(out))
    assert calls(profile, "get_item") == REQUESTS
    assert pids(profile) == {parent, *workers}
    assert sum(calls(profile.select({"pid": str(w)}), "get_item") for w in workers) == REQUESTS
    assert calls(profile.select({"pid": str(parent)}), "get_item") == 0
    assert profile.meta["workers"] == ",".join(str(w) for w in sorted(workers))
    # The workers' route latency histograms are summed: one entry, every request.
    routes = {r["route"]: r for r in profile.routes()}
    assert routes["GET /items/{item_id}"]["latency"]["count"] == REQUESTS
    # Each worker's own file stays beside -o; the run's private directory is gone.
    for w in workers:
        assert (out.parent / f"w.{w}.apiprof").is_file()
    # `apiprof report --pid` reads one process back; an unknown pid is a one-line error.
    w = min(workers)
    r = subprocess.run([str(APIPROF), "report", str(out), "--pid", str(w), "-f", "json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {t["labels"]["pid"] for t in json.loads(r.stdout)["threads"]} == {str(w)}
    assert sum(f["calls"] for f in json.loads(r.stdout)["functions"]
               if f["qualname"] == "get_item") == calls(profile.select({"pid": str(w)}),
                                                        "get_item")
    r = subprocess.run([str(APIPROF), "report", str(out), "--pid", "1", "-f", "json"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "no part of the profile has pid=1" in r.stderr
    assert "Traceback" not in r.stderr


def test_uvicorn_workers_are_traced_and_merged(tmp_path):
    """uvicorn --workers starts its workers with the spawn method: fresh interpreters,
    traced through the launcher; SIGINT to the supervisor ends them with SIGTERM."""
    out, text, parent = serve(tmp_path, signal.SIGINT, "-m", "uvicorn", "hotapp:app",
                              "--workers", "2", "--port", "{port}")
    workers = {int(p) for p in re.findall(r"Started server process \[(\d+)\]", text)}
    check_merged(out, text, parent, workers)
    assert "merged the profiles of 2 worker processes" in text


def test_spawned_pool_workers_are_merged(tmp_path):
    """multiprocessing's spawn method (a Pool, closed and joined; a Process ended by
    SIGTERM): every child is traced and merged; the program's results are unchanged."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp, os, signal, time
        def square(x):
            return x * x
        def wait_forever(ready):
            for _ in range(3): square(1)
            ready.set()
            time.sleep(60)
        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            pool = ctx.Pool(2)
            assert pool.map(square, range(20), chunksize=1) == [x * x for x in range(20)]
            assert pool.map(square, range(4)) == [0, 1, 4, 9]
            pool.close()
            pool.join()
            ready = ctx.Event()
            p = ctx.Process(target=wait_forever, args=(ready,))
            p.start()
            assert ready.wait(30)
            p.terminate()
            p.join()
            assert p.exitcode == -signal.SIGTERM
            print(p.pid)
    """))
    out = tmp_path / "prog.apiprof"
    r = subprocess.run([str(APIPROF), "run", "-q", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    profile = _core.load(str(out))
    workers = [int(p) for p in profile.meta["workers"].split(",")]
    assert len(workers) == 3 and int(r.stdout) in workers
    assert calls(profile, "square") == 20 + 4 + 3
    assert calls(profile.select({"pid": r.stdout.strip()}), "square") == 3
    assert calls(profile.select({"pid": r.stdout.strip()}), "wait_forever") == 1
    assert not list(Path(tempfile.gettempdir()).glob(f"apiprof-run-*/{workers[0]}"))
