"""`apiprof run` and `apiprof report`: scripts, modules, signals, real uvicorn, bad input."""

from __future__ import annotations

import json
import pstats
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from apiprof import _core
from conftest import free_port
from helpers import SHOP_DIR, serve_profiled

APIPROF = Path(sys.executable).with_name("apiprof")


def apiprof(*args, cwd=None, timeout=60):
    return subprocess.run([str(APIPROF), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def functions(path):
    return {f["qualname"]: f for f in _core.load(str(path)).functions()}


SCRIPT = """
import sys
def f(n):
    return sum(range(n))
for _ in range(3):
    f(200000)
print("argv", sys.argv, __name__)
sys.exit(int(sys.argv[1]))
"""


def test_run_script_keeps_argv_exit_code_and_writes_profile(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    out = tmp_path / "prog.apiprof"
    r = apiprof("run", "-o", out, script, "7", "--flag", cwd=tmp_path)
    assert r.returncode == 7, r.stderr
    assert f"argv ['{script}', '7', '--flag'] __main__" in r.stdout
    assert "apiprof: wrote" in r.stderr and "(f)" in r.stderr  # the top-20 summary
    assert functions(out)["f"]["calls"] == 3
    q = apiprof("run", "-q", script, "0", cwd=tmp_path)  # default output name, quiet
    assert q.returncode == 0 and q.stderr == ""
    assert functions(tmp_path / "prog.apiprof")["f"]["calls"] == 3


def test_run_module_with_main_semantics(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent("""
        import sys
        def main():
            print(__name__, sys.argv[1:])
            return 0
        raise SystemExit(main())
    """))
    r = apiprof("run", "-q", "-o", "m.apiprof", "-m", "mypkg", "a", "--b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "__main__ ['a', '--b']"
    assert functions(tmp_path / "m.apiprof")["main"]["calls"] == 1


LOOP = """
import sys, time
def tick():
    time.sleep(0.01)
print("ready", flush=True)
while True:
    tick()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_still_writes_a_readable_profile(tmp_path, sig):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    out = tmp_path / "loop.apiprof"
    proc = subprocess.Popen([str(APIPROF), "run", "-q", "-o", str(out), str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    prof = _core.load(str(out))
    assert not prof.truncated
    funcs = {f["qualname"]: f for f in prof.functions()}
    assert funcs["tick"]["calls"] >= 3
    assert funcs["time.sleep"]["calls"] >= funcs["tick"]["calls"] - 1


def test_bad_arguments_and_files_give_one_line_and_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a profile")
    cases = [
        ("run",),
        ("run", tmp_path / "missing.py"),
        ("run", "-m", "no_such_module_xyz"),
        ("run", "-o", tmp_path / "no" / "dir" / "x.apiprof", "-m", "json.tool"),
        ("report", tmp_path / "missing.apiprof"),
        ("report", tmp_path / "notes.txt"),
        ("report", tmp_path),
        ("report", tmp_path / "notes.txt", "--format", "pstats"),
    ]
    for args in cases:
        r = apiprof(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_report_formats_and_a_truncated_file(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    prof = tmp_path / "p.apiprof"
    assert apiprof("run", "-q", "-o", prof, script, "0").returncode == 0
    text = apiprof("report", prof, "--limit", "5")
    assert text.returncode == 0 and "cumtime" in text.stdout
    assert apiprof("report", prof, "--format", "json", "-o", tmp_path / "p.json").returncode == 0
    data = json.loads((tmp_path / "p.json").read_text())
    f = next(x for x in data["functions"] if x["qualname"] == "f")
    assert f["calls"] == 3 and f["primitive_calls"] == 3
    r = apiprof("report", prof, "--format", "pstats", "-o", tmp_path / "p.pstats")
    assert r.returncode == 0
    stats = pstats.Stats(str(tmp_path / "p.pstats")).stats
    cc, nc, tt, ct, _ = stats[(str(script), f["line"], "f")]
    assert (cc, nc) == (3, 3) and ct == pytest.approx(f["total_ns"] / 1e9, abs=1e-9)
    # cut the file in the middle of its last chunks: still readable, flagged
    raw = prof.read_bytes()
    cut = tmp_path / "cut.apiprof"
    cut.write_bytes(raw[: len(raw) - 30])
    r = apiprof("report", cut)
    assert r.returncode == 0 and "cut short" in r.stderr


def test_run_uvicorn_serving_the_shop(tmp_path):
    """`apiprof run -m uvicorn` under real traffic: endpoints found with exact counts."""
    port = free_port()
    out = tmp_path / "shop.apiprof"

    def drive(client: httpx.Client) -> None:
        for _ in range(3):
            assert client.get("/orders/recent", params={"limit": 5}).status_code == 200
        for zone in ("eu", "world"):
            r = client.get(f"/internal/rates/{zone}", params={"weight_grams": 900})
            assert r.status_code == 200

    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn", "shop.app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   SHOP_DIR, {"SHOP_DB": str(tmp_path / "shop.db")}, port,
                   tmp_path / "server.log", drive)
    funcs = functions(out)
    assert funcs["recent_orders"]["calls"] == 3      # sync route, in the thread pool
    assert funcs["load_order"]["calls"] == 15
    rate = funcs["carrier_rate"]                     # async route: two calls, 2 x 50 ms awaited
    assert rate["calls"] == 2
    assert rate["await_ns"] >= 0.8 * 0.1e9
    assert rate["self_ns"] < 20e6
    threads = _core.load(str(out)).trees()
    assert len(threads) >= 2                         # the event loop and pool threads


def test_cpu_clock_says_what_it_counts_and_shows_the_process_cpu(tmp_path):
    """--clock cpu times each Python thread: the report says so, with the process's CPU
    time (every thread, native ones included) and the wall time beside it."""
    script = tmp_path / "burn.py"
    script.write_text("import hashlib\n"
                      "hashlib.pbkdf2_hmac('sha256', b'pw', b'salt', 100_000)\n")
    r = apiprof("run", "--clock", "cpu", "-o", tmp_path / "cpu.apiprof", script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "note: cpu is the CPU time of each Python thread" in r.stderr
    meta = _core.load(str(tmp_path / "cpu.apiprof")).meta
    process = int(meta["process_cpu_ns"])
    table = max(f["total_ns"] for f in functions(tmp_path / "cpu.apiprof").values())
    assert process >= table > 0
    text = apiprof("report", tmp_path / "cpu.apiprof").stdout
    note = [line for line in text.splitlines() if line.startswith("note: cpu")]
    assert len(note) == 1 and "the whole process used " in note[0] and "of wall time" in note[0]
    r = apiprof("run", "-o", tmp_path / "wall.apiprof", script, cwd=tmp_path)
    assert "note: cpu" not in r.stderr
    assert "note: cpu" not in apiprof("report", tmp_path / "wall.apiprof").stdout
