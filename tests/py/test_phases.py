"""Phases of a function profile: Profiler.set_phase, Profile.select, apiprof run --phases
(SIGUSR1), apiprof report --phase; apiprof-load's phase gate (--phase-signal) and its
encoded histograms (--histograms)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apiprof
import pytest
from apiprof import _bench_result as bench_result
from apiprof import _core

APPS_DIR = Path(__file__).resolve().parent / "apps"
APIPROF = Path(sys.executable).with_name("apiprof")
LOAD = Path(apiprof.__file__).resolve().parent / "bin" / "apiprof-load"


def apiprof_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(APIPROF), *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def by_name(functions: list[dict]) -> dict[str, dict]:
    return {f["qualname"]: f for f in functions}


def leaf(n: int) -> int:
    return n + 1


def loop(n: int) -> None:
    for i in range(n):
        leaf(i)


def test_set_phase_splits_calls_threads_and_open_frames():
    p = apiprof.Profiler(builtins=False)
    assert p.phase is None
    p.set_phase("cold")
    p.start()
    loop(3)

    def outer() -> None:  # open across the switch: its time is split, its call stays cold
        loop(2)
        time.sleep(0.002)
        p.set_phase("warm")
        time.sleep(0.002)
        loop(5)

    outer()
    t = threading.Thread(target=loop, args=(7,))
    t.start()
    t.join()
    p.stop()
    assert p.phase == "warm"
    prof = p.profile
    labels = [tree["labels"] for tree in prof.trees()]
    assert [lab["phase"] for lab in labels] == ["cold", "warm", "warm"]
    assert labels[0]["thread_id"] == labels[1]["thread_id"] != labels[2]["thread_id"]
    cold = by_name(prof.select({"phase": "cold"}).functions())
    warm = by_name(prof.select({"phase": "warm"}).functions())
    whole = by_name(prof.functions())
    assert cold["leaf"]["calls"] == 5 and warm["leaf"]["calls"] == 12
    assert whole["leaf"]["calls"] == 17
    assert cold["loop"]["calls"] == 2 and warm["loop"]["calls"] == 2
    name = "test_set_phase_splits_calls_threads_and_open_frames.<locals>.outer"
    out_cold, out_warm = cold[name], warm[name]
    assert out_cold["calls"] == 1 and out_warm["calls"] == 0
    assert out_cold["total_ns"] >= 2_000_000 and out_warm["total_ns"] >= 2_000_000
    assert len(prof.select({"phase": "warm", "thread": "MainThread"}).trees()) == 1
    assert prof.select({"phase": "hot"}).trees() == []


@pytest.mark.parametrize("name,error,text", [("", ValueError, "1 to 100 characters"),
                                             ("x" * 101, ValueError, "1 to 100 characters"),
                                             (3, TypeError, "must be a str, not int")])
def test_set_phase_rejects_bad_names(name, error, text):
    with pytest.raises(error, match=text):
        apiprof.Profiler().set_phase(name)


def test_select_wants_a_dict_of_str():
    prof = apiprof.Profiler().profile
    with pytest.raises(TypeError, match="not list"):
        prof.select(["phase"])
    with pytest.raises(TypeError, match="dict of str"):
        prof.select({"phase": 1})


PHASED_SCRIPT = """
import os, signal
def f():
    return 1
for _ in range(3):
    f()
os.kill(os.getpid(), signal.SIGUSR1)
for _ in range(5):
    f()
os.kill(os.getpid(), signal.SIGUSR1)
for _ in range(2):
    f()
"""


def test_run_phases_move_on_sigusr1_and_report_selects_one(tmp_path):
    script = tmp_path / "phased.py"
    script.write_text(PHASED_SCRIPT)
    out = tmp_path / "p.apiprof"
    r = apiprof_cli("run", "-q", "--phases", "start,steady", "-o", out, script)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "apiprof run: SIGUSR1 after the last phase (steady): ignored\n"
    prof = _core.load(str(out))
    assert by_name(prof.select({"phase": "start"}).functions())["f"]["calls"] == 3
    assert by_name(prof.select({"phase": "steady"}).functions())["f"]["calls"] == 7
    j = apiprof_cli("report", out, "--phase", "steady", "--format", "json")
    assert j.returncode == 0, j.stderr
    data = json.loads(j.stdout)
    assert by_name(data["functions"])["f"]["calls"] == 7
    assert {t["labels"]["phase"] for t in data["threads"]} == {"steady"}
    t = apiprof_cli("report", out, "--phase", "start")
    assert t.returncode == 0 and "phase: start" in t.stdout.splitlines()[0]
    bad = apiprof_cli("report", out, "--phase", "warm")
    assert bad.returncode == 2
    assert bad.stderr == (f"apiprof report: {out} has no phase 'warm' "
                          "(its phases: start, steady)\n")


def test_run_without_phases_leaves_sigusr1_alone(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)\n")
    r = apiprof_cli("run", "-q", "-o", tmp_path / "s.apiprof", script)
    assert r.returncode == -signal.SIGUSR1  # the default action, as under python
    s = tmp_path / "n.py"
    s.write_text("pass\n")
    assert apiprof_cli("run", "-q", "-o", tmp_path / "n.apiprof", s).returncode == 0
    none = apiprof_cli("report", tmp_path / "n.apiprof", "--phase", "warm")
    assert none.returncode == 2 and "it has no phases" in none.stderr


@pytest.mark.parametrize("phases", ["", "a,a", "a,,b", ",".join("p" * 17)])
def test_run_bad_phases_one_line(tmp_path, phases):
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    r = apiprof_cli("run", "--phases", phases, script)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("apiprof run: --phases"), r.stderr


# ---- apiprof-load: the phase gate and the encoded histograms -----------------------------

RECEIVER = """
import signal, sys, time
out = open(sys.argv[1], "a", buffering=1)
signal.signal(signal.SIGUSR1, lambda *a: out.write("usr1\\n"))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def receiver(tmp_path):
    """A process that writes a line to a file per SIGUSR1."""
    log = tmp_path / "signals.txt"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(log)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc, log
    proc.terminate()
    assert proc.wait(10) == 0


@pytest.fixture(scope="module")
def app(serve_module):
    return serve_module("loadapp:app", cwd=APPS_DIR, health="/fast")


@pytest.mark.parametrize("model", [[], ["-R", "400"]], ids=["closed", "open"])
def test_phase_gate_signals_once_between_the_phases(app, receiver, tmp_path, model):
    proc, log = receiver
    r = subprocess.run([str(LOAD), "--json", "--phase-signal", str(proc.pid), "-n", "60",
                        "--warmup", "0.2", "-c", "4", "-t", "2", *model, f"{app.url}/fast"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    phases = json.loads(r.stdout)["phases"]
    assert phases["warm"]["requests"] == 60 and phases["warm"]["status"] == {"200": 60}
    cold = phases["cold"]
    assert cold["requests"] > 0 and cold["unfinished"] == 0
    assert cold["requests"] + sum(cold["errors"].values()) == cold["latency_ms"]["count"]
    assert cold["elapsed_s"] >= 0.2  # the warmup, then the drain and the signal
    assert log.read_text() == "usr1\n"


def test_phase_gate_without_warmup_signals_before_the_first_request(app, receiver):
    proc, log = receiver
    r = subprocess.run([str(LOAD), "--json", "--phase-signal", str(proc.pid), "-n", "10",
                        "-c", "2", "-t", "2", f"{app.url}/fast"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["phases"]["cold"] is None and data["phases"]["warm"]["requests"] == 10
    assert log.read_text() == "usr1\n"


@pytest.mark.parametrize("value,code,text", [
    ("0", 2, "--phase-signal: expected an integer"),
    ("x", 2, "--phase-signal: expected an integer"),
    ("2147483600", 1, "--phase-signal 2147483600: No such process"),
])
def test_phase_gate_bad_pid_one_line(app, value, code, text):
    r = subprocess.run([str(LOAD), "--phase-signal", value, "-n", "5", f"{app.url}/fast"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == code
    assert r.stderr.count("\n") == 1 and text in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("model", [[], ["-R", "500"]], ids=["closed", "open"])
def test_histograms_merge_exactly_into_the_total(app, tmp_path, model):
    urls = tmp_path / "urls.txt"
    urls.write_text("2 /fast\n1 /status/204\n1 /chunked\n")
    r = subprocess.run([str(LOAD), "--json", "--histograms", "-n", "80", "-c", "2", "-t", "1",
                        *model, "--urls", str(urls), "--base", app.url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    warm = json.loads(r.stdout)["phases"]["warm"]
    kinds = ["latency", "uncorrected"] if model else ["latency"]
    if not model:
        assert warm["histograms"]["uncorrected"] is None
    for kind in kinds:
        merged = _core.Histogram()
        for u in warm["urls"]:
            h = _core.Histogram.decode(base64.b64decode(u["histograms"][kind]))
            assert h.count == u["requests"]
            merged.merge(h)
        total = _core.Histogram.decode(base64.b64decode(warm["histograms"][kind]))
        assert merged.encode() == total.encode()
        key = "latency_ms" if kind == "latency" else "uncorrected_latency_ms"
        assert bench_result.latency_ms(merged) == warm[key]  # the same figures as C's


def test_route_matching_follows_starlette():
    requests = [["GET", "/items/7"], ["POST", "/items/7"], ["GET", "/v1/things/x"],
                ["GET", "/nope"], ["GET", "/health"]]
    r = subprocess.run([sys.executable, "-m", "apiprof._route_match", "hotapp:app"], cwd=APPS_DIR,
                       input=json.dumps(requests), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    app_file = str(APPS_DIR / "hotapp.py")
    assert [f["route"] for f in found] == ["/items/{item_id}", "/items/{item_id}",
                                          "/v1/things/{name}", None, "/health"]
    assert found[0]["endpoint"]["qualname"] == "get_item"
    assert found[0]["endpoint"]["file"] == app_file
    assert found[1]["endpoint"] is None  # 405: the endpoint does not run
    assert found[2]["endpoint"]["qualname"] == "thing"
    plain = subprocess.run([sys.executable, "-m", "apiprof._route_match", "loadapp:app"],
                           cwd=APPS_DIR, input='[["GET", "/fast"]]', capture_output=True,
                           text=True, timeout=60)
    assert json.loads(plain.stdout) == [{"route": None, "endpoint": None}]  # plain ASGI

