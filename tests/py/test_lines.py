"""Line profiling: exact hits, await per line, threads, the API, `apiprof lines`, real uvicorn."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import apiprof
import pytest
from apiprof import _core

APIPROF = Path(sys.executable).with_name("apiprof")
PY312 = sys.version_info >= (3, 12)


def apiprof_cli(*args, cwd=None, timeout=60):
    return subprocess.run([str(APIPROF), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def line_of(func, marker):
    """The line number of the line of func's source that ends with ``# marker``."""
    lines, first = inspect.getsourcelines(func)
    hits = [first + i for i, text in enumerate(lines) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def hits_of(lp_or_rows, func):
    rows = lp_or_rows if isinstance(lp_or_rows, list) else lp_or_rows.lines()
    return {r["line"]: r for r in rows if r["function"] == func.__qualname__}


# ---- functions under test --------------------------------------------------------------------


def branchy(n):
    total = 0  # init
    for i in range(n):  # loop
        if i % 2 == 0:  # test
            total += i  # even
        else:
            total -= 1  # odd
    if total > 100:  # big
        return total  # early
    return -total  # late


def comprehensions(n):
    squares = [i * i for i in range(n)]  # listcomp
    total = sum(x for x in squares)  # genexpr
    return total  # ret


def one_line_loop(n):
    while n: n -= 1  # noqa: E701  # while
    return n  # after


def raises(k):
    try:  # try
        if k:  # if
            raise ValueError(k)  # raise
        value = 1  # ok
    except ValueError:  # except
        value = 2  # handled
    return value  # ret


def propagates():
    x = 1  # first
    raise KeyError(x)  # raise


def gen(n):
    for i in range(n):  # noqa: UP028  # for
        yield i  # yield


def never_called():
    return 1  # body


async def waiter():
    a = 1  # a
    await asyncio.sleep(0.05)  # sleep50
    b = 2  # b
    await asyncio.sleep(0.02)  # sleep20
    return a + b  # ret


def worker(n):
    total = 0  # init
    for i in range(n):  # loop
        total += i  # add
    return total  # ret


def _twice(f):
    return f


def multi_line(n, items):
    x = max(n,  # call
            1,
            key=abs)
    if (x > 2 and  # cond
            x < 100):
        x += 1  # inside
    @_twice  # deco
    @_twice
    def inner():
        return 1
    y = [i * 2  # comp
         for i in items
         if i]
    total = sum(  # gen
        v for v in y
    )
    return (x + inner() + total +  # ret
            len("""text
    over lines"""))


# ---- exact hits ------------------------------------------------------------------------------


def test_exact_hits_loops_branches_and_early_return():
    lp = apiprof.LineProfiler(branchy)
    with lp:
        branchy(7)      # total = 0+2+4+6 - 3 = 9: the late return
        branchy(30)     # 0+2+...+28 = 210 - 15 = 195: the early return
    h = hits_of(lp, branchy)
    expect = {"init": 2, "loop": 7 + 1 + 30 + 1, "test": 37, "even": 4 + 15, "odd": 3 + 15,
              "big": 2, "early": 1, "late": 1}
    for marker, n in expect.items():
        assert h[line_of(branchy, marker)]["hits"] == n, marker
    assert all(r["time_ns"] > 0 for r in h.values())
    (fn,) = [f for f in lp.profile.functions() if f["qualname"] == "branchy"]
    assert fn["calls"] == 2


def test_comprehensions_count_once_per_entry():
    """A one-line comprehension is one hit per execution of the line on every
    version: on 3.11 it is its own code object (not a target), on 3.12+ it is
    inlined but sys.monitoring only reports a line when execution comes from
    another line. Generator expressions are their own code object everywhere."""
    lp = apiprof.LineProfiler(comprehensions)
    with lp:
        for _ in range(3):
            assert comprehensions(10) == 285
    h = hits_of(lp, comprehensions)
    assert [h[line_of(comprehensions, m)]["hits"] for m in ("listcomp", "genexpr", "ret")] == \
        [3, 3, 3]


def test_a_statement_over_several_lines_counts_once_per_execution():
    """A hit is one execution of a statement wherever its events come from: a call
    whose arguments span lines, a condition over lines, decorators, comprehensions
    (multi-line, with a condition), a generator argument, a return over lines.
    The later lines of such a statement get no hits; their time is the statement's."""
    lp = apiprof.LineProfiler(multi_line)
    with lp:
        for n in range(5):
            multi_line(n, [0, 1, 2])
    h = hits_of(lp, multi_line)
    first = multi_line.__code__.co_firstlineno
    got = {line - first: r["hits"] for line, r in h.items()}
    expect = {line_of(multi_line, m) - first: n for m, n in (
        ("call", 5), ("cond", 5), ("inside", 2), ("deco", 5), ("comp", 5), ("gen", 5),
        ("ret", 5))}
    assert got == expect


def test_one_line_loop_differs_by_version():
    """3.11 (trace function) counts a backward jump within a line as a new hit;
    3.12+ (sys.monitoring LINE) counts only arrivals from another line."""
    lp = apiprof.LineProfiler(one_line_loop)
    with lp:
        one_line_loop(4)
    h = hits_of(lp, one_line_loop)
    assert h[line_of(one_line_loop, "while")]["hits"] == (1 if PY312 else 4)
    assert h[line_of(one_line_loop, "after")]["hits"] == 1


def test_exceptions_caught_and_propagated():
    lp = apiprof.LineProfiler(raises, propagates)
    with lp:
        assert [raises(k) for k in (0, 1, 0, 1, 1)] == [1, 2, 1, 2, 2]
        for _ in range(2):
            with pytest.raises(KeyError):
                propagates()
        raises(0)   # the stack is consistent after the unwinds
    h = hits_of(lp, raises)
    expect = {"try": 6, "if": 6, "raise": 3, "ok": 3, "except": 3, "handled": 3, "ret": 6}
    for marker, n in expect.items():
        assert h[line_of(raises, marker)]["hits"] == n, marker
    p = hits_of(lp, propagates)
    assert p[line_of(propagates, "first")]["hits"] == 2
    assert p[line_of(propagates, "raise")]["hits"] == 2
    calls = {f["qualname"]: f["calls"] for f in lp.profile.functions()}
    assert calls == {"raises": 6, "propagates": 2}


def test_generator_resumes_are_not_calls():
    lp = apiprof.LineProfiler(gen)
    with lp:
        assert list(gen(3)) == [0, 1, 2]
    h = hits_of(lp, gen)
    assert h[line_of(gen, "for")]["hits"] == 4
    assert h[line_of(gen, "yield")]["hits"] == 3
    (fn,) = lp.profile.functions()
    assert fn["calls"] == 1 and fn["await_ns"] == 0   # a generator's pauses are not awaits


def test_await_time_per_line_apart_from_running_time():
    lp = apiprof.LineProfiler(waiter)
    with lp:
        assert asyncio.run(waiter()) == 3
    h = hits_of(lp, waiter)
    s50, s20 = h[line_of(waiter, "sleep50")], h[line_of(waiter, "sleep20")]
    assert s50["await_ns"] >= 0.8 * 50e6 and s20["await_ns"] >= 0.8 * 20e6
    assert s50["await_ns"] > s20["await_ns"]
    assert s50["time_ns"] < s50["await_ns"]      # suspension is not running time
    for marker in ("a", "b", "ret"):
        assert h[line_of(waiter, marker)]["await_ns"] == 0
        assert h[line_of(waiter, marker)]["hits"] == 1
    (fn,) = lp.profile.functions()
    assert fn["calls"] == 1 and fn["await_ns"] == s50["await_ns"] + s20["await_ns"]
    text = _report(lp)
    assert "Await" in text and "await asyncio.sleep(0.05)" in text


def test_several_threads_each_have_their_tree():
    lp = apiprof.LineProfiler(worker)
    threads = [threading.Thread(target=worker, args=(50,), name=f"w{i}") for i in range(4)]
    with lp:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        worker(50)
    h = hits_of(lp, worker)
    assert h[line_of(worker, "loop")]["hits"] == 5 * 51
    assert h[line_of(worker, "add")]["hits"] == 5 * 50
    named = {t["labels"].get("thread") for t in lp.profile.trees()}
    assert {"w0", "w1", "w2", "w3", "MainThread"} <= named


def test_a_function_with_no_line_events():
    lp = apiprof.LineProfiler(never_called, worker)
    with lp:
        worker(3)
    assert hits_of(lp, never_called) == {}
    text = _report(lp)
    assert "Function: never_called" in text and "calls: 0 (no line ran)" in text
    assert "return 1  # body" in text


def _report(lp):
    import io

    out = io.StringIO()
    lp.print(file=out)
    return out.getvalue()


# ---- API -------------------------------------------------------------------------------------


def test_profile_decorator_returns_the_function_itself():
    def f(x):
        return x + 1

    assert apiprof.profile(f) is f
    lp = apiprof.LineProfiler(marked=True)
    with lp:
        f(1)

        @apiprof.profile
        def g():   # marked while a marked=True profiler runs: added at once
            return 2

        g()
    names = {r["function"] for r in lp.lines()}
    assert {"test_profile_decorator_returns_the_function_itself.<locals>.f",
            "test_profile_decorator_returns_the_function_itself.<locals>.g"} <= names


def test_wrapper_context_manager_add_function_and_methods():
    class Shape:
        def area(self, k):
            return k * 2  # area

        @classmethod
        def make(cls):
            return cls()  # make

    lp = apiprof.LineProfiler()
    wrapped = lp(worker)
    assert wrapped(4) == 6 and not lp.running
    lp.add_function(Shape)
    with lp:
        Shape.make().area(3)
    assert hits_of(lp, worker)[line_of(worker, "add")]["hits"] == 4
    assert hits_of(lp, Shape.area)[line_of(Shape.area, "area")]["hits"] == 1
    assert hits_of(lp, Shape.make.__func__)[line_of(Shape.make, "make")]["hits"] == 1
    with pytest.raises(TypeError):
        lp.add_function(len)
    awaited = lp(waiter)
    assert asyncio.run(awaited()) == 3 and not lp.running
    assert hits_of(lp, waiter)[line_of(waiter, "b")]["hits"] == 1


def test_function_tracer_and_line_profiler_together(tmp_path):
    lp = apiprof.LineProfiler(worker)
    with apiprof.Profiler() as p, lp:
        worker(10)
    assert hits_of(lp, worker)[line_of(worker, "add")]["hits"] == 10
    assert {f["qualname"]: f["calls"] for f in p.functions()}["worker"] == 1
    if PY312:
        assert lp._tracer.tool_id is None   # released at stop


def test_json_export_and_native_file(tmp_path):
    lp = apiprof.LineProfiler(branchy)
    with lp:
        branchy(3)
    path = tmp_path / "l.apiprof"
    lp.save(path)
    r = apiprof_cli("report", path, "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = {x["line"]: x for x in data["lines"]}
    row = rows[line_of(branchy, "loop")]
    assert set(row) >= {"file", "function", "line", "hits", "time_ns", "await_ns"}
    assert row["hits"] == 4 and row["function"] == "branchy" and row["file"] == __file__
    assert _core.load(str(path)).lines() == lp.lines()
    text = apiprof_cli("report", path)
    assert text.returncode == 0
    assert "Line #" in text.stdout and "% Time" in text.stdout
    assert "for i in range(n):" in text.stdout


# ---- apiprof lines ---------------------------------------------------------------------------

SCRIPT = """
import sys

@profile
def work(n):
    total = 0
    for i in range(n):
        total += i
    return total

print(work(int(sys.argv[1])), sys.argv[1:])
sys.exit(3)
"""


def test_cli_script_with_builtin_profile(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    r = apiprof_cli("lines", "-o", tmp_path / "o.apiprof", script, "5", "x", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "10 ['5', 'x']" in r.stdout
    assert "Function: work" in r.stderr and "total += i" in r.stderr
    rows = {x["line"]: x["hits"] for x in _core.load(str(tmp_path / "o.apiprof")).lines()}
    assert rows == {6: 1, 7: 6, 8: 5, 9: 1}
    plain = subprocess.run([sys.executable, str(script), "1"], capture_output=True, text=True)
    assert plain.returncode == 1 and "NameError" in plain.stderr  # @profile comes from apiprof


def test_cli_module_function_and_module_options(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "calc.py").write_text(textwrap.dedent("""
        def square(x):
            return x * x

        class Acc:
            def add(self, v):
                self.v = v
                return v
    """))
    (pkg / "__main__.py").write_text(textwrap.dedent("""
        from mypkg.calc import square, Acc
        print(sum(square(i) for i in range(4)), Acc().add(2))
    """))
    out = tmp_path / "m.apiprof"
    r = apiprof_cli("lines", "-q", "-o", out, "--function", "mypkg.calc:square", "-m", "mypkg",
                    cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "14 2" and r.stderr == ""
    assert {(x["function"], x["hits"]) for x in _core.load(str(out)).lines()} == {("square", 4)}
    r = apiprof_cli("lines", "-q", "-o", out, "--module", "mypkg.calc", "-m", "mypkg", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    funcs = {x["function"] for x in _core.load(str(out)).lines()}
    assert funcs == {"square", "Acc.add"}


HOT = """
import json

def cold():
    return sum(range(10))

def hot():
    total = 0
    for i in range(200000):
        total += i % 7
    return total

def lukewarm():
    return sum(x * 2 for x in range(50000))

for _ in range(3):
    hot()
    lukewarm()
    cold()
    json.dumps({"a": list(range(2000))})
"""


def test_from_profile_picks_the_hottest_user_functions(tmp_path):
    script = tmp_path / "hot.py"
    script.write_text(HOT)
    prof = tmp_path / "hot.apiprof"
    r = apiprof_cli("run", "-q", "-o", prof, script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "hot.lines.apiprof"
    r = apiprof_cli("lines", "-q", "--from", prof, "--top", "2", "-o", out, script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "hot (hot.py:7)" in r.stderr and "lukewarm (hot.py:13)" in r.stderr
    rows = _core.load(str(out)).lines()
    assert {x["function"] for x in rows} == {"hot", "lukewarm"}   # not json's encoder, not cold
    hits = {x["line"]: x["hits"] for x in rows if x["function"] == "hot"}
    assert hits == {8: 3, 9: 3 * 200001, 10: 3 * 200000, 11: 3}


def test_from_profile_picks_by_the_time_a_user_function_is_responsible_for(tmp_path):
    # login spends little time itself but calls a library hash (Python in
    # site-packages, then a C builtin) that takes most of the profile; three cheap
    # handlers each have more self time than login. login must be picked first, and
    # a user callback below the library keeps its own time.
    import profiles
    app = tmp_path / "app.py"
    app.write_text("\n" * 80)
    lib = tmp_path / "venv" / "site-packages" / "hashlib_ext" / "hash.py"
    lib.parent.mkdir(parents=True)
    lib.write_text("\n" * 20)
    fr = profiles.fr
    main, login = fr("<module>", str(app), 1), fr("login", str(app), 10)
    hash_, c_core = fr("verify", str(lib), 5), fr("_hash.pbkdf2", "~", 0, 0, 2)
    callback = fr("on_hash", str(app), 70)
    handlers = [fr(f"handler_{i}", str(app), 20 + 10 * i) for i in range(3)]
    nodes = [([main], {"self_ns": 1_000}),
             ([main, login], {"self_ns": 2_000}),
             ([main, login, hash_], {"self_ns": 50_000}),
             ([main, login, hash_, c_core], {"self_ns": 900_000}),
             ([main, login, hash_, callback], {"self_ns": 40_000})]
    nodes += [([main, h], {"self_ns": 30_000 + 1_000 * i}) for i, h in enumerate(handlers)]
    prof = profiles.write({"meta": {"clock": "wall"},
                           "trees": [{"labels": {"thread": "MainThread"}, "nodes": nodes}]},
                          tmp_path / "login.apiprof")
    script = tmp_path / "run.py"
    script.write_text("print('ran')\n")
    r = apiprof_cli("lines", "-q", "--from", prof, "--top", "3", "-o", tmp_path / "x.apiprof",
                    script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "responsible for the most time" in lines[0], r.stderr
    total = 1_000 + 2_000 + 50_000 + 900_000 + 40_000 + 30_000 + 31_000 + 32_000
    assert lines[1].startswith("  login (app.py:10): 952.0us, "
                               f"{100 * 952_000 / total:.1f}% of the profile; itself 2.0us, "
                               "most below it in _hash.pbkdf2 (900.0us)"), lines[1]
    assert lines[2].startswith("  on_hash (app.py:70): 40.0us"), lines[2]
    assert lines[3].startswith("  handler_2 (app.py:40): 32.0us"), lines[3]
    assert len(lines) == 4 + 3, r.stderr   # the three "was not loaded" lines


@pytest.mark.parametrize("args, message", [
    (["--function", "nosuchmod:f"], "--function 'nosuchmod': cannot import it"),
    (["--function", "json:nope"], "json has no 'nope'"),
    (["--function", "json"], "expected MODULE:QUALNAME"),
    (["--function", "json:__name__"], "not a Python function or class"),
    (["--module", "nosuchmod"], "--module 'nosuchmod': cannot import it"),
    (["--from", "missing.apiprof"], "missing.apiprof"),
    (["--from", "notprof.txt"], "not a readable apiprof profile"),
    (["--top", "0", "--from", "x"], "--top must be 1 or more"),
])
def test_bad_targets_give_one_line_and_exit_2(tmp_path, args, message):
    script = tmp_path / "ok.py"
    script.write_text("print('ran')\n")
    (tmp_path / "notprof.txt").write_text("hello\n")
    r = apiprof_cli("lines", *args, script, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and "ran" not in r.stdout


def test_missing_script_exits_2(tmp_path):
    r = apiprof_cli("lines", tmp_path / "nope.py", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file" in r.stderr


# ---- real uvicorn ----------------------------------------------------------------------------

APP = """
import os
from contextlib import asynccontextmanager

import apiprof
from fastapi import FastAPI


@apiprof.profile
def score(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


@apiprof.profile
async def fetch(n):
    value = score(n)
    return value


@asynccontextmanager
async def lifespan(app):
    lp = apiprof.LineProfiler(marked=True)
    lp.start()
    yield
    lp.stop()
    lp.save(os.environ["LINES_OUT"])


app = FastAPI(lifespan=lifespan)


@app.get("/sync/{n}")
def sync_route(n: int):
    return {"v": score(n)}


@app.get("/async/{n}")
async def async_route(n: int):
    return {"v": await fetch(n)}
"""


def test_decorated_function_in_a_fastapi_app_under_uvicorn(tmp_path, serve, http):
    (tmp_path / "lineapp.py").write_text(APP)
    out = tmp_path / "app.lines.apiprof"
    server = serve("lineapp:app", cwd=tmp_path, env={"LINES_OUT": str(out)}, health="/sync/1")
    for _ in range(20):
        assert http.get(f"{server.url}/sync/10").json() == {"v": 285}
        assert http.get(f"{server.url}/async/5").json() == {"v": 30}
    assert server.stop() == 0
    assert "Traceback" not in server.log()
    prof = _core.load(str(out))
    rows = {(x["function"], x["line"]): x["hits"] for x in prof.lines()}
    # score: 21 sync calls (the health check included) of n=10 or 1, 20 of n=5 via fetch
    assert rows[("score", 11)] == 41 and rows[("score", 14)] == 41
    assert rows[("score", 12)] == 20 * 11 + 2 + 20 * 6
    assert rows[("score", 13)] == 20 * 10 + 1 + 20 * 5
    assert rows[("fetch", 19)] == 20 and rows[("fetch", 20)] == 20
    calls = {f["qualname"]: f["calls"] for f in prof.functions()}
    assert calls == {"score": 41, "fetch": 20}
    assert len(prof.trees()) >= 2   # sync routes run in the thread pool


def test_line_report_lists_functions_by_time(tmp_path):
    import profiles
    src = tmp_path / "m.py"
    src.write_text("def cheap():\n    return 1\n\ndef costly():\n    return 2\n\n"
                   "def never():\n    return 3\n")
    fr = profiles.fr
    cheap, costly, never = fr("cheap", str(src), 1), fr("costly", str(src), 4), fr(
        "never", str(src), 7)
    nodes = [([cheap], {"self_ns": 0, "calls": 3}),
             ([cheap, fr("cheap", str(src), 1, 2)], {"self_ns": 1_000, "hits": 3}),
             ([costly], {"self_ns": 0, "calls": 1}),
             ([costly, fr("costly", str(src), 4, 5)], {"self_ns": 90_000, "hits": 1}),
             ([never], {"self_ns": 0, "calls": 0})]
    prof = profiles.write({"meta": {"clock": "wall", "tool": "apiprof lines"},
                           "trees": [{"labels": {"thread": "MainThread"}, "nodes": nodes}]},
                          tmp_path / "m.lines.apiprof")
    r = apiprof_cli("report", prof)
    assert r.returncode == 0, r.stderr
    order = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("Function:")]
    assert order == ["costly", "cheap", "never"], r.stdout
