"""apiprof.Profiler: exact call counts, recursion (cProfile semantics), async, threads, exports."""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
import threading
import time

import apiprof
import pytest
from apiprof import _core

# ---- a known call graph --------------------------------------------------------------


def leaf(x):
    return x + 1


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def gen(n):
    for i in range(n):
        yield leaf(i)


def boom():
    raise ValueError("boom")


def catcher():
    try:
        boom()
    except ValueError:
        return 1


def make_adder(k):
    def add(x):
        return x + k

    return add


class Shape:
    def area(self):
        return leaf(1)


def workload():
    fact(5)                      # fact: 5 calls, 1 primitive
    is_even(6)                   # is_even: 4 calls (6, 4, 2, 0), is_odd: 3 (5, 3, 1)
    total = 0
    for v in gen(4):             # gen: 1 call, 5 resumes; leaf: 4
        total += v
    for _ in range(3):
        catcher()                # catcher: 3, boom: 3 (each raises)
    add = make_adder(2)          # make_adder: 1
    for i in range(5):
        add(i)                   # add: 5
    s = Shape()
    s.area()
    s.area()                     # Shape.area: 2, leaf: +2
    sorted([3, 1, 2])            # builtins.sorted: 1
    "-".join(["a", "b"])         # str.join: 1
    return total


EXPECTED = {
    "workload": (1, 1), "fact": (5, 1), "is_even": (4, 1), "is_odd": (3, 1), "gen": (1, 1),
    "leaf": (6, 6), "catcher": (3, 3), "boom": (3, 3), "make_adder": (1, 1),
    "make_adder.<locals>.add": (5, 5), "Shape.area": (2, 2), "builtins.sorted": (1, 1),
    "str.join": (1, 1),
}


def by_qualname(functions):
    return {f["qualname"]: f for f in functions}


def test_exact_call_counts_on_a_known_graph():
    with apiprof.Profiler() as p:
        workload()
    funcs = by_qualname(p.functions())
    for name, (calls, prim) in EXPECTED.items():
        assert name in funcs, f"{name} missing"
        assert (funcs[name]["calls"], funcs[name]["primitive_calls"]) == (calls, prim), name
    assert funcs["builtins.sorted"]["kind"] == "builtin"
    assert funcs["str.join"]["kind"] == "method"
    assert funcs["fact"]["file"] == __file__ and funcs["fact"]["line"] > 0
    # the profiler's own frames are not in the profile (its package: a checkout's path
    # may itself contain "apiprof")
    own = os.path.dirname(os.path.abspath(apiprof.__file__)) + os.sep
    assert not [f for f in funcs.values() if os.path.abspath(f["file"]).startswith(own)]
    assert [f for f in funcs.values() if f["file"] == __file__]
    # callers with per-edge counts: fact is called once by workload and 4 times by itself
    fact = funcs["fact"]
    callers = {p.functions()[e["function"]]["qualname"]: e for e in fact["callers"]}
    assert callers["workload"]["calls"] == 1 and callers["fact"]["calls"] == 4
    assert callers["fact"]["primitive_calls"] == 1


def test_counts_agree_with_cprofile():
    """Same calls and primitive calls as cProfile for every Python function it sees."""
    cp = cProfile.Profile()
    cp.enable()
    workload()
    cp.disable()
    theirs = {k[2]: (v[1], v[0]) for k, v in pstats.Stats(cp).stats.items() if k[0] == __file__}
    with apiprof.Profiler(builtins=False) as p:
        workload()
    ours = {f["name"]: (f["calls"], f["primitive_calls"]) for f in p.functions()
            if f["file"] == __file__}
    theirs.pop("gen")  # cProfile counts each resume of a generator as a call
    assert ours.pop("gen") == (1, 1)
    assert ours == theirs


def test_recursive_cumtime_counts_once():
    def rec(n):
        if n == 0:
            time.sleep(0.02)
        else:
            rec(n - 1)

    with apiprof.Profiler() as p:
        rec(5)
    f = by_qualname(p.functions())["test_recursive_cumtime_counts_once.<locals>.rec"]
    assert (f["calls"], f["primitive_calls"]) == (6, 1)
    # counted once: about 20 ms, where summing the six nested frames would give >= 120 ms
    assert 18e6 <= f["total_ns"] < 60e6
    assert f["self_ns"] < 10e6  # the sleep is time.sleep's self time
    assert by_qualname(p.functions())["time.sleep"]["self_ns"] >= 18e6


def test_await_is_not_a_call_and_is_charged_to_the_awaiting_function():
    async def h():
        await asyncio.sleep(0.1)

    async def twice():
        await h()
        await h()

    p = apiprof.Profiler()
    with p:
        asyncio.run(twice())
    funcs = by_qualname(p.functions())
    f = funcs["test_await_is_not_a_call_and_is_charged_to_the_awaiting_function.<locals>.h"]
    assert f["calls"] == 2
    assert f["await_ns"] >= 0.8 * 0.2e9
    assert f["self_ns"] < 20e6 and f["total_ns"] < 40e6
    t = funcs["test_await_is_not_a_call_and_is_charged_to_the_awaiting_function.<locals>.twice"]
    assert t["calls"] == 1 and t["await_ns"] >= 0.8 * 0.2e9


def test_generators_count_starts_not_resumes():
    def numbers():
        yield 1
        yield 2
        yield 3

    def stops_early():
        for v in numbers():
            if v == 2:
                return v

    def throws():
        g = numbers()
        next(g)
        try:
            g.throw(KeyError("x"))
        except KeyError:
            pass

    with apiprof.Profiler() as p:
        for _ in range(4):
            list(numbers())
        stops_early()
        throws()
    funcs = by_qualname(p.functions())
    assert funcs["test_generators_count_starts_not_resumes.<locals>.numbers"]["calls"] == 6
    assert funcs["test_generators_count_starts_not_resumes.<locals>.stops_early"]["calls"] == 1
    assert funcs["test_generators_count_starts_not_resumes.<locals>.throws"]["calls"] == 1


def work(n):
    return sum(i * i for i in range(n))


def test_threads_each_get_a_labelled_tree():
    threads = [threading.Thread(target=work, args=(1000,), name=f"worker-{i}") for i in range(4)]
    with apiprof.Profiler() as p:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    prof = p.profile
    assert by_qualname(prof.functions())["work"]["calls"] == 4
    names = []
    for i, tree in enumerate(prof.trees()):
        funcs = by_qualname(prof.functions(tree=i))
        if "work" in funcs:
            assert funcs["work"]["calls"] == 1
            names.append(tree["labels"].get("thread"))
            assert tree["labels"]["thread_id"].isdigit()
    assert sorted(names) == [f"worker-{i}" for i in range(4)]


def test_include_exclude_and_cpu_clock():
    with apiprof.Profiler(include=["test_trace"], builtins=False) as p:
        workload()
        json.dumps({"a": 1})
    files = {f["file"] for f in p.functions()}
    assert files == {__file__}
    with apiprof.Profiler(exclude=[__file__]) as p:
        workload()
    assert "fact" not in by_qualname(p.functions())
    with apiprof.Profiler(clock="cpu") as p:
        time.sleep(0.05)
    assert p.profile.meta["clock"] == "cpu"
    assert by_qualname(p.functions())["time.sleep"]["total_ns"] < 20e6  # asleep: no CPU
    with pytest.raises(ValueError):
        apiprof.Profiler(clock="tsc")


def test_decorator_and_print(capsys):
    p = apiprof.Profiler()

    @p
    def entry():
        return fact(4)

    entry()
    entry()
    funcs = by_qualname(p.functions())
    assert funcs["test_decorator_and_print.<locals>.entry"]["calls"] == 2
    assert funcs["fact"]["calls"] == 8
    p.print(sort="calls", limit=1)
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 3 and "(fact)" in out.splitlines()[2]


def test_only_one_profiler_at_a_time():
    with apiprof.Profiler():
        with pytest.raises(RuntimeError, match="another apiprof profiler"):
            apiprof.Profiler().start()


def test_pstats_export_matches_json(tmp_path):
    with apiprof.Profiler() as p:
        workload()
    p.save(tmp_path / "w.apiprof")
    prof = _core.load(str(tmp_path / "w.apiprof"))
    prof.write_pstats(str(tmp_path / "w.pstats"))
    prof.write_json(str(tmp_path / "w.json"))
    data = json.loads((tmp_path / "w.json").read_text())
    stats = pstats.Stats(str(tmp_path / "w.pstats")).stats
    assert len(stats) == len(data["functions"])
    for f in data["functions"]:
        if f["kind"] == "python":
            key = (f["file"], f["line"], f["name"])
        elif f["kind"] == "method":
            owner, _, name = f["qualname"].rpartition(".")
            key = ("~", 0, f"<method '{name}' of '{owner}' objects>")
        else:
            key = ("~", 0, f"<built-in method {f['qualname']}>")
        cc, nc, tt, ct, callers = stats[key]
        assert (nc, cc) == (f["calls"], f["primitive_calls"])
        assert tt == pytest.approx(f["self_ns"] / 1e9, abs=1e-9)
        assert ct == pytest.approx(f["total_ns"] / 1e9, abs=1e-9)
        assert sum(c[0] for c in callers.values()) <= f["calls"]
    fact = next(f for f in data["functions"] if f["name"] == "fact")
    assert {"name", "qualname", "file", "line", "calls", "primitive_calls", "self_ns",
            "total_ns", "await_ns", "callers", "callees"} <= fact.keys()
    assert data["threads"][0]["labels"]["thread"] == "MainThread"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_another_monitoring_tool_keeps_its_id_and_events():
    mon = sys.monitoring
    seen = []
    mon.use_tool_id(mon.DEBUGGER_ID, "a debugger")
    try:
        mon.register_callback(mon.DEBUGGER_ID, mon.events.PY_START,
                              lambda code, off: seen.append(code.co_name))
        mon.set_events(mon.DEBUGGER_ID, mon.events.PY_START)
        cp = cProfile.Profile()
        with apiprof.Profiler() as p:
            assert p._tracer.tool_id not in (mon.DEBUGGER_ID, mon.PROFILER_ID)
            cp.enable()  # cProfile takes PROFILER_ID while apiprof runs
            fact(5)
            cp.disable()
        mon.set_events(mon.DEBUGGER_ID, 0)
        assert seen.count("fact") == 5
        assert by_qualname(p.functions())["fact"]["calls"] == 5
        theirs = {k[2]: v for k, v in pstats.Stats(cp).stats.items()}
        assert theirs["fact"][1] == 5
        assert mon.get_tool(mon.DEBUGGER_ID) == "a debugger"
        assert mon.get_tool(p._tracer.tool_id or 3) is None  # apiprof gave its id back
    finally:
        mon.set_events(mon.DEBUGGER_ID, 0)
        mon.free_tool_id(mon.DEBUGGER_ID)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_no_free_tool_id_is_a_clear_error():
    mon = sys.monitoring
    taken = [i for i in range(6) if mon.get_tool(i) is None]
    for i in taken:
        mon.use_tool_id(i, "busy")
    try:
        with pytest.raises(RuntimeError, match="tool id"):
            apiprof.Profiler().start()
    finally:
        for i in taken:
            mon.free_tool_id(i)
    with apiprof.Profiler() as p:
        fact(2)
    assert by_qualname(p.functions())["fact"]["calls"] == 2


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11 uses the profile hook")
def test_another_setprofile_user_is_a_clear_error():
    sys.setprofile(lambda *a: None)
    try:
        with pytest.raises(RuntimeError, match="another profiler"):
            apiprof.Profiler().start()
    finally:
        sys.setprofile(None)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11's profile function reports no "
                    "call of a compiled (Cython) function: its time stays with the caller")
def test_compiled_event_loop_calls_are_timed_not_the_callers_self_time():
    """uvloop's Loop.run_until_complete is a Cython function: its call, the whole event
    loop with its idle wait, is a frame of its own, not self time of asyncio's Runner.run."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        await asyncio.sleep(0.05)

    with apiprof.Profiler() as p:
        uvloop.run(main())
    funcs = by_qualname(p.functions())
    loop = funcs["uvloop.loop.Loop.run_until_complete"]
    assert loop["calls"] >= 1 and loop["total_ns"] >= 45_000_000 and loop["file"] == "~"
    assert funcs["Runner.run"]["self_ns"] < 10_000_000
