"""Profiler(cpu=True) / apiprof run --cpu: each frame's thread CPU time beside its wall
time, through the metric catalogue (cpu_ns self, cpu_total_ns with callees)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import apiprof
import pytest

APIPROF = Path(sys.executable).with_name("apiprof")


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def nap(seconds: float) -> None:
    time.sleep(seconds)


def both() -> None:
    spin(0.03)
    nap(0.05)


def rows(p: apiprof.Profiler) -> dict[str, dict]:
    return {f["qualname"]: f for f in p.functions()}


def test_cpu_split_identity_and_waiting():
    with apiprof.Profiler(cpu=True) as p:
        both()
        both()
    r = rows(p)
    assert r["both"]["calls"] == 2 and r["spin"]["calls"] == 2
    for name in ("both", "spin", "nap"):
        assert r[name].keys() >= {"cpu_total_ns"}, name
    # Inclusive = self + callees' inclusive, exactly (one call path each).
    callees = sum(r[n]["cpu_total_ns"] for n in ("spin", "nap"))
    assert r["both"]["cpu_total_ns"] == r["both"].get("cpu_ns", 0) + callees
    # Spinning is CPU; sleeping is not: the sleep's wall time is not in its CPU time.
    assert r["spin"]["cpu_total_ns"] >= 60_000_000
    assert r["nap"]["cpu_total_ns"] < r["nap"]["total_ns"] // 10
    # Without cpu=True the tracer reads no CPU clock and records no CPU metric.
    with apiprof.Profiler() as q:
        both()
    assert all("cpu_ns" not in f and "cpu_total_ns" not in f for f in q.functions())


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def compute(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fib(12)


def doze(times: int) -> None:
    for _ in range(times):
        time.sleep(0.1)


def threads_profile(*targets: tuple, found: list | None = None) -> dict[str, dict]:
    """The function rows by qualname; the `<gil wait>` rows (one per waiting function)
    summed into one; the gil_contention findings appended to found."""
    with apiprof.Profiler(cpu=True) as p:
        ts = [threading.Thread(target=f, args=a) for f, a in targets]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    r = rows(p)
    if found is not None:
        found += [f for f in p.profile.findings() if f["kind"] == "gil_contention"]
    waits = [f for f in p.functions() if f["qualname"] == "<gil wait>"]
    if waits:
        r["<gil wait>"] = {k: sum(f[k] for f in waits) if isinstance(waits[0][k], int) else
                           {f[k] for f in waits} for k in ("calls", "self_ns", "total_ns",
                                                           "wait_gil_ns", "kind", "file")}
    return r


def test_gil_wait_of_cpu_bound_threads():
    """Two CPU-bound pure-Python threads run in turns: each waits for the GIL about half of
    its wall time, recorded as calls of `<gil wait>` under the function that waited (kind
    gil, inclusive up the stack), out of its own time. One such thread alone waits for
    next to nothing, and a thread that sleeps beside it waits in `time.sleep` (sleep),
    not for the GIL."""
    found: list = []
    pair = threads_profile((compute, (0.4,)), (compute, (0.4,)), found=found)
    c, g = pair["compute"], pair["<gil wait>"]
    assert 0.25 * c["total_ns"] < c["wait_gil_ns"] < 0.75 * c["total_ns"]
    assert g["wait_gil_ns"] == g["self_ns"] == g["total_ns"] and g["kind"] == {"other"}
    # nearly all in this file's functions (a thread starting beside the other may wait in
    # threading.py's bootstrap too)
    assert __file__ in g["file"] and g["calls"] >= 2 and c["wait_gil_ns"] >= 0.9 * g["total_ns"]
    # The wait is not in the waiting functions' own time (else it would count twice).
    assert pair["fib"]["self_ns"] + c["self_ns"] + g["total_ns"] <= c["total_ns"]
    ran = pair["fib"]["total_ns"] - pair["fib"]["wait_gil_ns"]
    assert pair["fib"]["cpu_total_ns"] > 0.5 * ran

    # Written down: the function that waited most (fib runs most of the time), high.
    top = max(found, key=lambda f: f["value"])
    assert top["severity"] == "high" and top["function"] == "fib", found
    where = f"test_cpu_split.py:{fib.__code__.co_firstlineno}"
    assert "for the GIL" in top["message"] and where in top["message"]

    found.clear()
    alone = threads_profile((compute, (0.3,)), found=found)
    assert found == []
    assert alone["compute"].get("wait_gil_ns", 0) < 0.05 * alone["compute"]["total_ns"]

    beside = threads_profile((compute, (0.4,)), (doze, (3,)))
    d = beside["doze"]
    assert d["wait_sleep_ns"] >= 300_000_000
    assert d.get("wait_gil_ns", 0) < 0.1 * d["total_ns"]


def test_cpu_total_counts_recursion_once():
    with apiprof.Profiler(cpu=True, builtins=False) as p:
        fib(15)
    f = rows(p)["fib"]
    assert f["calls"] == 1973 and f["primitive_calls"] == 1
    # Counted once per recursion (like cumtime): the outermost call's own figure, not
    # the sum over the nested calls.
    nodes = p.profile.nodes(0)
    fibs = [n for n in nodes if n["qualname"] == "fib"]
    (outer,) = [n for n in fibs if nodes[n["parent"]]["qualname"] != "fib"]
    assert f["cpu_total_ns"] == outer["cpu_total_ns"]
    assert f["cpu_total_ns"] < sum(n["cpu_total_ns"] for n in fibs)
    assert f["cpu_ns"] == sum(n["cpu_ns"] for n in fibs)


def test_phase_switch_starts_the_cpu_count_again():
    p = apiprof.Profiler(cpu=True, builtins=False)

    def work() -> None:
        spin(0.1)
        p.set_phase("after")

    p.set_phase("before")
    with p:
        work()
    after = p.profile.select({"phase": "after"}).functions()
    (w,) = [f for f in after if f["qualname"].endswith("work")]
    # The frame reopened in the "after" tree carries only what ran after the switch,
    # not the 100 ms spun before it.
    assert w["cpu_total_ns"] < 50_000_000


def test_cpu_needs_the_wall_clock():
    with pytest.raises(ValueError, match="cpu=True needs clock='wall'"):
        apiprof.Profiler(clock="cpu", cpu=True)


def test_run_cpu_columns_and_sort(tmp_path: Path):
    script = tmp_path / "work.py"
    script.write_text(textwrap.dedent("""
        import time
        def spin():
            end = time.thread_time() + 0.05
            while time.thread_time() < end:
                pass
        def wait():
            time.sleep(0.05)
        spin(); wait()
    """))
    out = tmp_path / "work.apiprof"
    r = subprocess.run([str(APIPROF), "run", "--cpu", "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stderr.splitlines() if line.lstrip().startswith("ncalls"))
    assert header.split()[5:8] == ["cpu", "cpu", "total"]
    doc = json.loads(subprocess.run([str(APIPROF), "report", str(out), "-f", "json"],
                                    capture_output=True, text=True, check=True).stdout)
    funcs = {f["qualname"]: f for f in doc["functions"]}
    assert funcs["spin"]["cpu_total_ns"] > funcs["wait"]["cpu_total_ns"]
    text = subprocess.run([str(APIPROF), "report", str(out), "--sort", "cpu-total", "--limit", "3"],
                          capture_output=True, text=True, check=True).stdout
    assert "sorted by cpu-total" in text
    bad = subprocess.run([str(APIPROF), "run", "--cpu", "--clock", "cpu", str(script)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--cpu needs" in bad.stderr
