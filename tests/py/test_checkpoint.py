"""Profiles that survive a kill: atomic saves, checkpoints of a running profile, and the
note a cut profile carries."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from apiprof import Profiler, _core
from conftest import free_port
from helpers import wait_healthy

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = Path(__file__).parent / "apps"
FORMATS = ("html", "svg", "dot", "speedscope", "pprof", "collapsed", "callgrind", "chrome",
           "text", "json", "pstats", "findings")


def calls_of(path: Path, qualname: str) -> int:
    funcs = {f["qualname"]: f for f in _core.load(str(path)).functions()}
    return funcs[qualname]["calls"] if qualname in funcs else 0


def work(n: int) -> int:
    return sum(range(n))


def test_sigkilled_uvicorn_keeps_its_work_up_to_the_last_checkpoint(tmp_path):
    """A served app killed by SIGKILL leaves the profile of its last checkpoint: every
    request done before it, readable by every format, saying that it was cut."""
    port = free_port()
    out = tmp_path / "served.apiprof"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [str(APIPROF), "run", "-q", "--timeline", "--checkpoint-interval", "0.2", "-o", str(out),
         "-m", "uvicorn", "hotapp:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=APPS, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          trust_env=False) as client:
            wait_healthy(client, proc, tmp_path / "server.log")
            for i in range(20):
                assert client.get(f"/items/{i}").status_code == 200
            # a checkpoint after the 20 requests (the file holds all of them) ...
            deadline = time.monotonic() + 60
            while not (out.exists() and calls_of(out, "get_item") == 20):
                assert time.monotonic() < deadline, "no checkpoint holds the 20 requests"
                time.sleep(0.05)
            for i in range(5):  # ... then more work, and the kill
                assert client.get(f"/items/{i}").status_code == 200
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert 20 <= calls_of(out, "get_item") <= 25
    assert calls_of(out, "get_item") == calls_of(out, "hot")
    assert _core.load(str(out)).meta["cut"].startswith("checkpoint of a run that had not ended")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert_every_format_reads(out, tmp_path)


def assert_every_format_reads(out: Path, tmp_path: Path) -> None:
    for fmt in FORMATS:
        r = subprocess.run([str(APIPROF), "report", "--format", fmt, "-o",
                            str(tmp_path / f"r.{fmt}"), str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (fmt, r.stderr)
        assert f"{out} was cut: checkpoint" in r.stderr, fmt
        assert (tmp_path / f"r.{fmt}").stat().st_size > 0, fmt
    # the text report itself says so, not only the command's stderr
    assert "\ncut: checkpoint of a run that had not ended" in (tmp_path / "r.text").read_text()


def test_sigkill_after_25_s_under_traffic_keeps_the_first_10_s_by_default(tmp_path):
    """The stated default: `apiprof run -m uvicorn` with no checkpoint option, under
    traffic, SIGKILLed 25 s after it started, leaves a profile that holds at least every
    request finished in its first 10 s (the default interval is 10 s), readable by every
    format."""
    port = free_port()
    out = tmp_path / "served.apiprof"
    log = open(tmp_path / "server.log", "wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(APIPROF), "run", "-q", "--timeline", "-o", str(out),
         "-m", "uvicorn", "hotapp:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=APPS, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    done_at: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          trust_env=False) as client:
            wait_healthy(client, proc, tmp_path / "server.log")
            while time.monotonic() - started < 25:
                assert client.get(f"/items/{len(done_at)}").status_code == 200
                done_at.append(time.monotonic() - started)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    in_first_10_s = sum(1 for t in done_at if t < 10)
    assert in_first_10_s > 0, "the server was not serving within its first 10 s"
    kept = calls_of(out, "get_item")
    assert in_first_10_s <= kept <= len(done_at), (in_first_10_s, kept, len(done_at))
    assert kept == calls_of(out, "hot")
    assert _core.load(str(out)).meta["cut"].startswith("checkpoint of a run that had not ended")
    assert_every_format_reads(out, tmp_path)


def test_final_save_clears_the_cut_note(tmp_path):
    out = tmp_path / "p.apiprof"
    p = Profiler(checkpoint=out, checkpoint_interval=3600)
    with p:
        work(1000)
        p.checkpoint_now()
        assert _core.load(str(out)).meta["cut"]
        assert calls_of(out, "work") == 1
        work(1000)
    assert not p.profile.meta.get("cut")  # stopped: whole again, however it is saved
    p.save(out)
    assert not _core.load(str(out)).meta.get("cut")
    assert calls_of(out, "work") == 2
    r = subprocess.run([str(APIPROF), "report", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "was cut" not in r.stderr


def test_the_checkpoint_thread_is_not_profiled(tmp_path):
    """apiprof's own checkpoint thread is no part of the profile: it saves (checkpoints
    are written) yet no function of its own has a call or any time, and its thread's
    bootstrap frames, opened before it could stop being profiled, are forgotten rather
    than closed at the end with all of its life (only the few calls threading made
    before the thread's target ran are left, microseconds)."""
    out = tmp_path / "p.apiprof"
    p = Profiler(checkpoint=out, checkpoint_interval=0.05, timeline=10000)
    with p:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            work(200)
    assert _core.load(str(out)).meta.get("cut")   # a checkpoint was written meanwhile
    rows = {f["qualname"]: f for f in p.functions()}
    assert rows["work"]["calls"] > 1
    own = [f for f in p.functions() if f["qualname"] in ("_Checkpoints._loop",
                                                          "_Checkpoints.save")]
    assert all(f["calls"] == 0 and f["total_ns"] == 0 for f in own), own
    prof = p.profile
    for i, t in enumerate(prof.trees()):
        if t["labels"].get("thread") == "apiprof-checkpoint":
            top = [n for n in prof.nodes(i) if n.get("parent") == 0]
            assert top and all(n.get("total_ns", 0) == 0 for n in top), top


def test_checkpoint_interval_must_be_positive():
    for bad in (0, -1, "10"):
        try:
            Profiler(checkpoint="x.apiprof", checkpoint_interval=bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    r = subprocess.run([str(APIPROF), "run", "--checkpoint-interval", "-1", "x.py"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--checkpoint-interval" in r.stderr


def profiler_with_work() -> Profiler:
    p = Profiler()
    with p:
        work(100)
    return p


def test_save_replaces_a_regular_file_by_a_new_one(tmp_path):
    """The old file is never rewritten in place: a reader holding it open (or a kill
    during the save) still has the old complete profile."""
    out = tmp_path / "p.apiprof"
    profiler_with_work().save(out)
    old = out.read_bytes()
    os.chmod(out, 0o640)
    with open(out, "rb") as held:
        p = Profiler()
        with p:
            work(100)
            work(100)
        p.save(out)
        assert held.read() == old  # the held file is the old one, whole
    assert calls_of(out, "work") == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # the mode is kept
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.apiprof"]


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "real.apiprof"
    target.write_bytes(b"old")
    link = tmp_path / "link.apiprof"
    link.symlink_to(target)
    profiler_with_work().save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert calls_of(target, "work") == 1


def test_save_writes_through_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    profiler_with_work().save(fifo)
    reader.join(30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert got and got[0].startswith(b"APIPROF\0")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["pipe"]
