"""`apiprof run` of programs that fork: a child that returns to the launcher writes its own
NAME.<pid>.apiprof, merged at the end into the parent's -o file whose own part (its pid
label) is the parent's alone, and forked workers carry no apiprof SIGTERM handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from apiprof import _core
from conftest import free_port
from helpers import wait_healthy

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"


def run(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run([str(APIPROF), "run", "-q", "-o", str(tmp_path / "prog.apiprof"),
                           *args, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def calls(path: Path) -> dict[str, int]:
    return {f["qualname"]: f["calls"] for f in _core.load(str(path)).functions()}


def own_calls(path: Path) -> dict[str, int]:
    """Calls of the -o profile's own process: its trees whose pid is not a merged
    worker's (all of them when nothing was merged)."""
    profile = _core.load(str(path))
    workers = set(profile.meta.get("workers", "").split(","))
    mine = {t["labels"].get("pid") for t in profile.trees()} - workers
    if mine != {None}:
        assert len(mine) == 1, mine
        profile = profile.select({"pid": mine.pop()})
    return {f["qualname"]: f["calls"] for f in profile.functions()}


def merged_pids(path: Path) -> list[int]:
    workers = _core.load(str(path)).meta.get("workers", "")
    return sorted(int(p) for p in workers.split(",") if p)


def test_os_fork_child_writes_its_own_file(tmp_path):
    r = run(tmp_path, """
        import os, sys
        def parent_work(): return sum(range(1000))
        def child_work(): return sum(range(1000))
        pid = os.fork()
        if pid == 0:
            for _ in range(3): child_work()
            print("child", os.getpid())
        else:
            for _ in range(2): parent_work()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    """)
    assert r.returncode == 0, r.stderr
    child = int(r.stdout.split()[1])
    parent = own_calls(tmp_path / "prog.apiprof")
    assert parent["parent_work"] == 2 and "child_work" not in parent
    assert merged_pids(tmp_path / "prog.apiprof") == [child]
    assert calls(tmp_path / "prog.apiprof")["child_work"] == 3
    mine = calls(tmp_path / f"prog.{child}.apiprof")
    assert mine["child_work"] == 3
    assert mine.get("parent_work", 0) == 0
    assert "Traceback" not in r.stderr


def test_multiprocessing_fork_pool_terminate_prints_nothing(tmp_path):
    """Pool.terminate() sends SIGTERM to its workers: they end as without apiprof."""
    r = run(tmp_path, """
        import multiprocessing as mp, time
        def square(x):
            return x * x
        def sleepy(x):
            time.sleep(60)
        if __name__ == "__main__":
            pool = mp.get_context("fork").Pool(3)
            assert pool.map(square, range(10)) == [x * x for x in range(10)]
            pool.map_async(sleepy, range(3))
            time.sleep(0.5)
            pool.terminate()
            pool.join()
            print("done")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert "Traceback" not in r.stderr and "Terminated" not in r.stderr, r.stderr
    assert calls(tmp_path / "prog.apiprof")["Pool.terminate"] == 1


def test_prefork_workers_that_exit_normally(tmp_path):
    """A prefork server's workers return to the launcher (sys.exit): each writes its own
    file, the parent's is whole."""
    r = run(tmp_path, """
        import os, sys
        def serve(n): return sum(range(n))
        workers = []
        for i in range(3):
            pid = os.fork()
            if pid == 0:
                for _ in range(i + 1): serve(1000)
                sys.exit(0)
            workers.append(pid)
        for pid in workers:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        print(*workers)
    """)
    assert r.returncode == 0, r.stderr
    for i, pid in enumerate(int(x) for x in r.stdout.split()):
        assert calls(tmp_path / f"prog.{pid}.apiprof")["serve"] == i + 1
    parent = own_calls(tmp_path / "prog.apiprof")
    assert "serve" not in parent and parent["<module>"] == 1
    assert merged_pids(tmp_path / "prog.apiprof") == sorted(int(x) for x in r.stdout.split())
    assert calls(tmp_path / "prog.apiprof")["serve"] == 1 + 2 + 3


def test_gunicorn_workers_exit_cleanly(tmp_path):
    """Real gunicorn with uvicorn workers under `apiprof run`: each worker checkpoints to
    its own file; SIGTERM to the arbiter ends every worker as without apiprof (uvicorn
    re-raises it with the default action once shut down), no traceback."""
    port = free_port()
    out = tmp_path / "g.apiprof"
    log_path = tmp_path / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(APIPROF), "run", "--checkpoint-interval", "0.2", "-o", str(out), "-m", "gunicorn",
         "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b", f"127.0.0.1:{port}", "hotapp:app"],
        cwd=APPS, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          trust_env=False) as client:
            wait_healthy(client, proc, log_path)
            for i in range(10):
                assert client.get(f"/items/{i}").status_code == 200
            deadline = time.monotonic() + 60
            while sum(calls(w).get("get_item", 0) for w in tmp_path.glob("g.*.apiprof")) < 10:
                assert time.monotonic() < deadline, "the workers wrote no checkpoint"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = log_path.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    workers = list(tmp_path.glob("g.*.apiprof"))
    assert sorted(int(w.name.split(".")[1]) for w in workers) == sorted(
        int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "Booting worker" in line)
    assert sum(calls(w).get("get_item", 0) for w in workers) == 10
    assert own_calls(out).get("get_item", 0) == 0
    # The workers' last checkpoints are merged into -o, each labelled with its pid.
    assert merged_pids(out) == sorted(int(w.name.split(".")[1]) for w in workers)
    assert calls(out)["get_item"] == 10
    profile = _core.load(str(out))
    assert {t["labels"]["pid"] for t in profile.trees()} == {
        str(proc.pid), *(w.name.split(".")[1] for w in workers)}
