"""`apiprof bench --sweep`: the saturation point of a route that serialises on a lock, the
client limit of an async route, what grew between two steps of the profile, and the
analysis on its own (parsing, knee, saturation)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apiprof import _core, _sweep
from apiprof.errors import UsageError
from cdp import Browser

APPS_DIR = Path(__file__).resolve().parent / "apps"
APIPROF = Path(sys.executable).with_name("apiprof")
LOCK_CAPACITY = 1 / 0.015   # the /locked route holds its lock 15 ms per request


def sweep(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "sweep.json"
    r = subprocess.run([str(APIPROF), "bench", "--app", "sweep_app:app", "--app-dir",
                        str(APPS_DIR), "-d", "1", "--settle", "0.5", "-o", str(out), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    result["_stdout"], result["_stderr"] = r.stdout, r.stderr
    return result


def test_lock_saturates_near_its_capacity_and_the_lock_wait_grew(tmp_path):
    r = sweep(tmp_path, "/locked", "--sweep", "20:120:20", "-c", "32", "--profile", "trace")
    a = r["analysis"]
    assert a["saturation_rps"] is not None, r["_stdout"]
    assert abs(a["saturation_rps"] - LOCK_CAPACITY) <= 0.2 * LOCK_CAPACITY, r["_stdout"]
    assert a["limit"]["kind"] in ("server", "server_cpu")
    steps = r["sweep"]["steps"]
    # every step up to the saturated one was sustained, the one after was not
    sat = a["saturation_step"]
    assert all(s["overall"]["ok"] for s in steps[:sat + 1])
    assert not steps[sat + 1]["overall"]["ok"]
    assert [row["name"] for row in steps[0]["routes"]] == ["GET /locked"]
    assert a["routes"]["GET /locked"]["saturation_rps"] is not None
    # progress per step on stderr, the table and the conclusion on stdout
    assert r["_stderr"].count("req/s offered") == len(steps)
    assert "<- saturation" in r["_stdout"] and "saturation point:" in r["_stdout"]
    # the profile's phases are the steps; waiting for the lock grew per request
    grew = r["grew"]   # its rows may be empty: at the saturated step requests hardly queue
    assert grew["low"] == "step-1" and grew["high"] == f"step-{sat + 1}"
    assert f"--phase-a step-1 --phase-b {grew['high']}" in r["_stdout"]   # how to see it all
    # at the saturated step (evenly spaced arrivals) requests hardly queue yet; one step
    # past it they queue for the lock, and that is what grew most
    past = _sweep.what_grew(Path(grew["file"]), ("step-1", steps[0]["overall"]["requests"]),
                            (f"step-{sat + 2}", steps[sat + 1]["overall"]["requests"]))
    assert past[0]["metric"] in ("wait_lock_ns", "self_ns") and "lock" in past[0]["function"]
    assert any(g["metric"] == "wait_lock_ns" for g in past), past
    rep = subprocess.run([str(APIPROF), "report", grew["file"], "--phase", grew["high"]],
                         capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert "locked" in rep.stdout
    # the page and the chart beside the result: the SLO line and the saturation marked
    svg = (tmp_path / "sweep.svg").read_text()
    assert "SLO p99=200ms" in svg and f"saturation {steps[sat]['rate']:g} req/s" in svg
    assert svg.count("<circle") >= len(steps)
    page = (tmp_path / "sweep.html").read_text()
    assert page.count('<tr class="') == len(steps) and '<tr class="sat">' in page
    assert "saturation point:" in page
    # the same chart and table are a section of the profile's own HTML report
    html = tmp_path / "report.html"
    rep = subprocess.run([str(APIPROF), "report", grew["file"], "-o", str(html)],
                         capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    with Browser(tmp_path / "chromium") as browser:
        view = browser.open(html.as_uri())
        view.wait_for("document.body.dataset.ready === '1'")
        assert view.errors == [] and view.eval("window.apiprofErrors.length") == 0
        assert view.eval("document.querySelectorAll('#sweep tr[class]').length") == len(steps)
        assert view.eval("document.querySelectorAll('#sweep tr.sat').length") == 1
        assert view.eval("document.querySelectorAll('#sweep svg circle').length") >= len(steps)
        assert "saturation point:" in view.eval("document.querySelector('#sweep pre').textContent")
        header = view.eval("document.body.innerText")
        assert "sweep_steps" not in header      # the metadata is the section, not header text
        view.screenshot(tmp_path / "sweep-section.png")


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under the address sanitizer with the suite running beside it, the "
                    "sampled server did not stop within bench's 40 s (an open problem)")
def test_sampled_sweep_has_a_phase_per_step_and_the_lock_grew(tmp_path):
    """--profile sample: the server under apiprof run --sample --idle; each step is a phase
    of the sampled profile, and what grew past saturation is the locked route."""
    r = sweep(tmp_path, "/locked", "--sweep", "20:140:60", "-c", "32", "--profile", "sample")
    steps = r["sweep"]["steps"]
    assert steps[0]["overall"]["ok"] and not steps[-1]["overall"]["ok"], r["_stdout"]
    grew = r["grew"]
    whole = _core.load(grew["file"])
    assert whole.meta["tool"] == "apiprof-spy"
    for i in range(1, len(steps) + 1):   # every step's samples are in its own phase
        assert list(whole.select({"phase": f"step-{i}"}).functions()), i
    past = _sweep.what_grew(Path(grew["file"]), ("step-1", steps[0]["overall"]["requests"]),
                            (f"step-{len(steps)}", steps[-1]["overall"]["requests"]))
    assert past and past[0]["function"].endswith("(locked)"), past


def test_the_server_bench_starts_can_be_interrupted_when_bench_cannot(tmp_path):
    """bench run as a background job of a shell without job control (SIGINT ignored, as
    CI runs it) still starts its server with SIGINT's default action: the graceful stop
    and the profile written on it begin with SIGINT (an ignored signal stays ignored
    across exec, and bench waited 10 s for nothing before)."""
    script = tmp_path / "spawn.py"
    script.write_text(
        "import signal, subprocess, sys\n"
        "from apiprof.commands.bench import _interruptible_children\n"
        "probe = [sys.executable, '-c', 'import signal; print(signal.getsignal(signal.SIGINT))']\n"
        "def name(h): return 'ignored' if h in (signal.SIG_IGN, 'Handlers.SIG_IGN', '1') else h\n"
        "print(name(subprocess.run(probe, capture_output=True, text=True).stdout.strip()))\n"
        "with _interruptible_children():\n"
        "    child = subprocess.Popen(probe, stdout=subprocess.PIPE, text=True)\n"
        "print(name(child.communicate()[0].strip()))\n"
        "print(name(signal.getsignal(signal.SIGINT)))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ignored", "<built-in function default_int_handler>",
                                     "ignored"]


def test_async_route_is_limited_by_the_clients_connections(tmp_path):
    # 2 connections and a 20 ms await: the client can carry at most ~100 req/s
    # (the steps stay far from that limit: 20 needs 0.4 busy connections, 120 needs 2.5,
    # so a busy machine cannot move the step that fails)
    r = sweep(tmp_path, "/sleep", "--sweep", "20:220:100", "-c", "2", "-t", "1")
    a = r["analysis"]
    assert a["saturation_rps"] is None
    assert a["sustained_rps"] == 20
    assert a["limit"]["kind"] == "client_connections", a["limit"]
    assert "no saturation found up to" in r["_stdout"] and "connections" in r["_stdout"]


def test_async_route_within_the_range_says_so(tmp_path):
    r = sweep(tmp_path, "/sleep", "--sweep", "10:30:20", "-c", "16")
    a = r["analysis"]
    assert a["saturation_rps"] is None and a["first_failed_step"] is None
    assert a["limit"]["kind"] == "range"
    assert "the top of the range (30 req/s)" in r["_stdout"]


def test_parsing():
    assert _sweep.parse_range("20:100:20") == [20, 40, 60, 80, 100]
    assert _sweep.parse_range("auto") is None
    for bad in ("0:10:1", "10:5:1", "1:2", "a:b:c", "1:100000:1"):
        with pytest.raises(UsageError):
            _sweep.parse_range(bad)
    assert _sweep.parse_slo("p99=200ms") == _sweep.Slo("p99", 99.0, 200.0)
    assert _sweep.parse_slo("p99.9=1s") == _sweep.Slo("p99.9", 99.9, 1000.0)
    assert _sweep.parse_slo("p50=20") == _sweep.Slo("p50", 50.0, 20.0)
    for bad in ("p0=1ms", "99=1ms", "p99=", "p99=-1ms", "p101=1ms"):
        with pytest.raises(UsageError):
            _sweep.parse_slo(bad)


def test_knee_and_saturation():
    # latency flat, then steep: the knee is the last flat point
    curve = [(10, 5), (20, 5.5), (30, 6), (40, 7), (42, 80), (43, 300)]
    assert _sweep.knee(curve) == 3
    assert _sweep.knee(curve[:2]) is None
    assert _sweep.knee([(1, 1), (2, 1), (3, 1)]) is None
    ok = [{"ok": v} for v in (True, True, False, True, False)]
    assert _sweep.saturation(ok) == (1, 2)
    assert _sweep.saturation([{"ok": True}] * 3) == (2, None)
    assert _sweep.saturation([{"ok": False}]) == (None, 0)


def test_chart_writer_escapes_and_marks(tmp_path):
    from apiprof import _core
    steps = [{"offered": r, "achieved": r * 0.99, "slo_ms": ms, "p50_ms": ms / 2,
              "failed": 0, "ok": ms < 100, "server_cpu": 0.5} for r, ms in
             ((10, 5.0), (20, 6.0), (30, 400.0))]
    chart = {"title": "<script>x</script>", "slo": "p99=100ms", "slo_limit_ms": 100.0,
             "saturation": 1, "knee": 1, "conclusion": "a < b\nsecond line", "steps": steps}
    for fmt in ("svg", "html"):
        out = tmp_path / f"c.{fmt}"
        _core.write_sweep(fmt, str(out), chart)
        text = out.read_text()
        assert "<script>" not in text and "&lt;script&gt;" in text
        assert "saturation 20 req/s" in text and "SLO p99=100ms" in text
        assert 'class="bad"' in text   # the step past the objective is drawn hollow
    assert "a &lt; b\nsecond line" in (tmp_path / "c.html").read_text()
    with pytest.raises(ValueError):
        _core.write_sweep("png", str(tmp_path / "x"), chart)
    with pytest.raises(TypeError):
        _core.write_sweep("svg", str(tmp_path / "x"), {**chart, "steps": [1]})


def test_usage_errors(tmp_path):
    for args, text in ((["--sweep", "1:2:1", "-R", "5", "http://127.0.0.1:1/"], "drop -R"),
                       (["--sweep", "x", "http://127.0.0.1:1/"], "--sweep wants"),
                       (["--sweep", "1:2:1", "--slo", "p99", "http://127.0.0.1:1/"],
                        "--slo wants")):
        r = subprocess.run([str(APIPROF), "bench", *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr


class _FakeDriver:
    """A server that sustains up to 50 req/s: the auto range doubles until a step fails,
    then adds two steps between the last sustained rate and the failed one."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def rates_auto(self) -> list[float]:
        return _sweep.Driver.rates_auto(self)  # type: ignore[arg-type]

    def step(self, rate: float, index: int) -> _sweep.Step:
        self.rates.append(rate)
        st = _sweep.Step(rate, {}, 0.1, 0.5, 1.0, f"step-{index + 1}")
        st.overall = {"ok": rate <= 50, "achieved_rps": min(rate, 50.0), "slo_ms": 1.0,
                      "failed": 0}
        return st


def test_auto_range_doubles_then_refines(capsys):
    d = _FakeDriver()
    steps = _sweep.sweep(d, None, sys.stderr)  # type: ignore[arg-type]
    assert d.rates == [10, 20, 40, 80, 53.3, 66.7]
    assert [s.rate for s in steps] == [10, 20, 40, 53.3, 66.7, 80]
    assert [s.phase for s in steps] == ["step-1", "step-2", "step-3", "step-5", "step-6",
                                        "step-4"]
    assert capsys.readouterr().err.count("req/s offered") == 6


def test_profile_options_need_the_tracer(tmp_path):
    r = subprocess.run([str(APIPROF), "bench", "--app", "sweep_app:app", "--app-dir",
                        str(APPS_DIR), "/locked", "--profile", "sample", "--profile-memory",
                        "sampled", "-o", str(tmp_path / "x.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "apiprof bench: --profile-memory and --profile-queries go with --profile trace"]
