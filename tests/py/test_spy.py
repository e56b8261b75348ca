"""apiprof-spy from outside: `apiprof dump` of a known stack, `apiprof attach` of a real
uvicorn under load, `apiprof run --sample`, and the errors a user can act on. Runs on
every supported Python: the targets are started with the interpreter of the test run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apiprof
import httpx
import pytest
from helpers import REPO_ROOT

APPS = Path(__file__).parent / "apps"
KNOWN = APPS / "spy_known_stack.py"
APIPROF = [sys.executable, "-m", "apiprof"]


def marker_line(path: Path, marker: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return n
    raise AssertionError(f"no marker {marker} in {path}")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*APIPROF, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT)


@pytest.fixture
def known_stack() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, str(KNOWN)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)   # from print() to the wait: a few bytecodes
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_dump_json_known_stack(known_stack: subprocess.Popen[str]) -> None:
    done = cli("dump", str(known_stack.pid), "--json")
    assert done.returncode == 0, done.stderr
    dump = json.loads(done.stdout)
    assert dump["pid"] == known_stack.pid
    assert dump["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    main = [t for t in dump["threads"] if t["tid"] == known_stack.pid]
    assert len(main) == 1 and main[0]["name"] == "MainThread"
    ours = [(f["qualname"], f["line"]) for f in main[0]["frames"] if f["file"] == str(KNOWN)]
    assert ours == [
        ("leaf", marker_line(KNOWN, "WAIT")),
        ("middle", marker_line(KNOWN, "CALL-LEAF")),
        ("outer", marker_line(KNOWN, "CALL-MIDDLE")),
        ("<module>", marker_line(KNOWN, "CALL-OUTER")),
    ]
    # Innermost first: the frames above leaf are threading's (Event.wait ...).
    assert main[0]["frames"][0]["qualname"] == "Condition.wait"
    assert main[0]["frames"][-1]["qualname"] == "<module>"
    leaf = next(f for f in main[0]["frames"] if f["qualname"] == "leaf")
    assert leaf["firstlineno"] == marker_line(KNOWN, "WAIT") - 3
    spinner = [t for t in dump["threads"] if t["tid"] != known_stack.pid]
    assert len(spinner) == 1
    assert [f["qualname"] for f in spinner[0]["frames"]][-1] == "Thread._bootstrap"
    assert any(f["qualname"] == "spin" for f in spinner[0]["frames"])


def test_dump_text_known_stack(known_stack: subprocess.Popen[str]) -> None:
    done = cli("dump", str(known_stack.pid))
    assert done.returncode == 0, done.stderr
    assert f'Thread {known_stack.pid} "MainThread"' in done.stdout
    lines = [ln.strip() for ln in done.stdout.splitlines()]
    i = lines.index(f"leaf ({KNOWN}:{marker_line(KNOWN, 'WAIT')})")
    assert lines[i + 1:i + 4] == [
        f"middle ({KNOWN}:{marker_line(KNOWN, 'CALL-LEAF')})",
        f"outer ({KNOWN}:{marker_line(KNOWN, 'CALL-MIDDLE')})",
        f"<module> ({KNOWN}:{marker_line(KNOWN, 'CALL-OUTER')})",
    ]


def child_pids(pid: int) -> list[int]:
    """The direct children of pid, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _export(path: Path) -> dict:
    done = cli("report", str(path), "--format", "json", "-o", str(path) + ".json")
    assert done.returncode == 0, done.stderr
    return json.loads(Path(str(path) + ".json").read_text())


def _stack_samples(export: dict, tid: int) -> list[tuple[list[str], dict]]:
    """(qualnames root first, node metrics) of every node of thread tid."""
    frames = export["frames"]
    tree = next(t for t in export["threads"] if t["labels"]["thread_id"] == str(tid))
    paths: list[list[str]] = []
    out = []
    for node in tree["nodes"]:
        parent = node["parent"]
        path = ([] if parent < 0 else paths[parent]) + (
            [frames[node["frame"]]["qualname"]] if parent >= 0 else [])
        paths.append(path)
        out.append((path, node))
    return out


@pytest.fixture
def loaded_server(serve):  # type: ignore[no-untyped-def]
    """spyapp under uvicorn, loaded by apiprof-load (two connections, one thread) from
    before the test until its end."""
    server = serve("spyapp:app", cwd=APPS, health="/health")
    load = subprocess.Popen(
        [str(Path(apiprof.__file__).parent / "bin" / "apiprof-load"), "-c", "2", "-t", "1",
         "-d", "60", "--no-progress", f"{server.url}/hot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield server
    finally:
        load.kill()
        load.wait()


def test_attach_uvicorn_under_load(loaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "live.apiprof"
    duration, rate = 2.0, 100
    done = cli("attach", str(loaded_server.proc.pid), "-d", str(duration), "-r", str(rate),
                   "-o", str(out), "--idle")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stderr
    export = _export(out)
    meta = export["meta"]
    assert meta["tool"] == "apiprof-spy" and meta["pid"] == str(loaded_server.proc.pid)
    expected = duration * rate
    assert abs(int(meta["sample_ticks"]) - expected) <= 0.1 * expected, meta
    nodes = _stack_samples(export, loaded_server.proc.pid)
    samples = sum(n.get("samples", 0) for _, n in nodes)
    # --idle: every tick keeps the event loop thread's stack (less the torn reads).
    assert abs(samples - expected) <= 0.1 * expected, meta
    hot = sum(n.get("samples", 0) for path, n in nodes if "burn" in path)
    running = sum(n.get("cpu_ns", 0) for _, n in nodes)
    hot_running = sum(n.get("cpu_ns", 0) for path, n in nodes if "burn" in path)
    assert hot >= 0.5 * samples, (hot, samples)
    assert hot_running >= 0.6 * running, (hot_running, running)
    # Under burn, the route handler and uvicorn's loop are its callers.
    assert any(path[-2:] == ["hot", "burn"] for path, n in nodes if n.get("samples"))


def test_attach_labels_samples_with_the_middlewares_routes(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An app behind apiprof's middleware: while attached, each sample carries the route
    its thread was serving (read from the middleware's board), so a sampled profile
    splits by route like a traced one."""
    server = serve("spyroutes_app:app", cwd=APPS, health="/health")
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"GET {server.url}{p}\n"
                            for p in ("/alpha/1", "/alpha/2", "/beta", "/gamma")))
    load = subprocess.Popen(
        [str(Path(apiprof.__file__).parent / "bin" / "apiprof-load"), "-c", "2", "-t", "1",
         "-d", "60", "--no-progress", "--urls", str(urls)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "routes.apiprof"
    try:
        time.sleep(0.5)
        done = cli("attach", str(server.proc.pid), "-d", "2", "-o", str(out))
    finally:
        load.kill()
        load.wait()
    assert done.returncode == 0, done.stderr
    whole = apiprof._core.load(str(out))
    by_route = {}
    burns = {"GET /alpha/{n}": "burn_alpha", "GET /beta": "burn_beta",
             "GET /gamma": "burn_gamma"}
    # the thread pool's work of the sync route too (3.14+: a context watcher; every
    # version: the worker's context shares the request's variables)
    for route in burns:
        names = {f["qualname"]: f for f in whole.select({"route": route}).functions()}
        assert names.get(burns[route], {}).get("samples", 0) > 0, (route, sorted(names))
        assert not {b for b in burns.values() if b != burns[route]} & set(names), (
            route, sorted(names))
        by_route[route] = names[burns[route]]["samples"]
    # two requests of /alpha/{n} to one of /beta, each as long
    assert by_route["GET /alpha/{n}"] > by_route["GET /beta"], by_route


@pytest.mark.parametrize("fmt", ["collapsed", "pstats", "speedscope", "pprof", "html", "svg",
                                 "callgrind", "dot", "chrome"])
def test_sampled_profile_every_format(known_stack: subprocess.Popen[str], tmp_path: Path,
                                      fmt: str) -> None:
    out = tmp_path / "k.apiprof"
    done = cli("attach", str(known_stack.pid), "-d", "0.3", "-o", str(out), "--idle")
    assert done.returncode == 0, done.stderr
    report = tmp_path / f"k.{fmt}"
    done = cli("report", str(out), "--format", fmt, "-o", str(report))
    if fmt == "chrome":   # a timeline comes from traced events; samples have none
        assert done.returncode == 2 and "no event timeline" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    assert report.stat().st_size > 0
    if fmt == "collapsed":
        text = report.read_text()
        assert "outer" in text and "leaf" in text


def test_attach_target_exits_file_written(tmp_path: Path) -> None:
    script = tmp_path / "short.py"
    script.write_text(textwrap.dedent("""
        import time
        def work():
            end = time.monotonic() + 3.0   # outlives the start of apiprof attach
            while time.monotonic() < end:
                pass
        print("go", flush=True)
        work()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    out = tmp_path / "short.apiprof"
    done = cli("attach", str(proc.pid), "-d", "30", "-o", str(out))
    proc.wait()
    assert done.returncode == 0, done.stderr
    export = _export(out)
    assert export["meta"]["target_exited"] == "1"
    assert float(export["meta"]["sample_duration_ns"]) < 10e9
    assert any("work" in path for path, n in _stack_samples(export, proc.pid) if n.get("samples"))


def test_run_sample(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        def crunch():
            end = time.monotonic() + 0.8
            n = 0
            while time.monotonic() < end:
                n += 1
            return n
        crunch()
        sys.exit(3)
    """))
    out = tmp_path / "prog.apiprof"
    done = cli("run", "--sample", "--rate", "200", "-o", str(out), str(script))
    assert done.returncode == 3, done.stderr
    export = _export(out)
    nodes = _stack_samples(export, int(export["meta"]["pid"]))
    crunch = sum(n.get("samples", 0) for path, n in nodes if path[-1:] == ["crunch"])
    assert crunch >= 0.5 * sum(n.get("samples", 0) for _, n in nodes)
    assert export["meta"]["sample_rate"] == "200"


def test_run_sample_passes_sigterm_on_to_a_program_slow_to_stop(tmp_path: Path) -> None:
    """A program that goes on after SIGINT (a server draining requests) gets the SIGTERM
    sent to `apiprof run --sample` while it stops: run never exits before it (leaving it
    running), and the profile written at SIGINT is kept."""
    script = tmp_path / "slow.py"
    ready = tmp_path / "ready"
    script.write_text(textwrap.dedent(f"""
        import signal, sys, time
        signal.signal(signal.SIGINT, lambda s, f: print("draining", flush=True))
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))
        open({str(ready)!r}, "w").close()
        while True:
            time.sleep(0.01)
    """))
    out = tmp_path / "slow.apiprof"
    run = subprocess.Popen([*APIPROF, "run", "--sample", "--idle", "-o", str(out), str(script)],
                           cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        run.send_signal(signal.SIGINT)   # the sampler stops and writes; the program goes on
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert run.poll() is None   # waiting for the program
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 7, stderr
    assert "draining" in stdout
    assert int(_export(out)["meta"]["sample_ticks"]) > 0


def test_run_sample_phases(tmp_path: Path) -> None:
    """apiprof run --sample --phases: each SIGUSR1 to apiprof run moves the sampler to the
    next phase; one after the last is ignored, with a line."""
    script = tmp_path / "phased.py"
    script.write_text(textwrap.dedent("""
        import os, signal, time
        def spin(s):
            end = time.monotonic() + s
            while time.monotonic() < end:
                pass
        def first():
            spin(0.5)
        def second():
            spin(0.5)
        def third():
            spin(0.5)
        for work in (first, second, third):
            work()
            os.kill(os.getppid(), signal.SIGUSR1)   # apiprof run: the next phase
            time.sleep(0.1)                         # (the sampler switches at its next tick)
    """))
    out = tmp_path / "phased.apiprof"
    done = cli("run", "--sample", "--rate", "200", "--phases", "a,b,c", "-o", str(out),
               str(script))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("SIGUSR1 after the last phase: ignored") == 1, done.stderr
    whole = apiprof._core.load(str(out))
    for phase, mine in (("a", "first"), ("b", "second"), ("c", "third")):
        names = {f["qualname"]: f["total_ns"] for f in whole.select({"phase": phase}).functions()}
        assert names.get(mine, 0) > 0, (phase, names)
        others = {"first", "second", "third"} - {mine}
        assert all(names.get(o, 0) == 0 for o in others), (phase, names)


def _chains(depth: int, leaf: str) -> list[str]:
    """Source of two call chains f0 -> ... -> f{depth-1} and g0 -> ..., each ending in
    leaf."""
    return [f"def {c}{i}():\n    {f'{c}{i + 1}()' if i < depth - 1 else leaf}\n"
            for c in ("f", "g") for i in range(depth)]


def test_many_code_objects_keep_their_names(tmp_path: Path) -> None:
    """The sampler's cache of code objects grows while a stack is read (here past 256
    entries, in the middle of the second chain's walk); frames read before it grew keep
    their function: each chain is one call path with every function in order."""
    defs = _chains(180, "spin(0.6)")
    script = tmp_path / "chains.py"
    script.write_text(
        "import sys, time\nsys.setrecursionlimit(10000)\n"
        "def spin(s):\n    end = time.monotonic() + s\n"
        "    while time.monotonic() < end:\n        pass\n"
        # the sampler attaches while the program starts, which can take a while on a
        # busy machine: the chains begin after a pause; and a pause between them, so that
        # no walk runs while one chain's frames are replaced by the other's in the same
        # memory (a walk that straddles that reads a mix: a torn read this test is not
        # about, seen once in CI)
        + "".join(defs) + "time.sleep(1.0)\nf0()\ntime.sleep(0.3)\ng0()\n")
    out = tmp_path / "chains.apiprof"
    done = cli("run", "--sample", "--rate", "200", "-o", str(out), str(script))
    assert done.returncode == 0, done.stderr
    export = _export(out)
    paths = [path for path, n in _stack_samples(export, int(export["meta"]["pid"]))
             if path[-1:] == ["spin"] and n.get("samples")]
    for chain in ("f", "g"):
        want = [f"{chain}{i}" for i in range(180)]
        found = [p for p in paths if f"{chain}0" in p]
        assert found, chain
        for p in found:
            assert p[p.index(f"{chain}0"):-1] == want, (chain, p[:5])


def test_a_stack_rebuilt_to_the_same_depth_during_a_walk_is_not_mixed(tmp_path: Path) -> None:
    """Two call chains of 120 functions each take turns every millisecond, each built in
    the memory the other left: a walk that straddles a switch reads frames of both. Such
    a sample is dropped as torn; no sample mixes the chains."""
    defs = _chains(120, "spin(0.001)")
    script = tmp_path / "turns.py"
    script.write_text(
        "import time\n"
        "def spin(s):\n    end = time.monotonic() + s\n"
        "    while time.monotonic() < end:\n        pass\n"
        + "".join(defs) + "time.sleep(1.0)\n"   # the sampler attaches meanwhile
        "end = time.monotonic() + 2.0\n"
        "while time.monotonic() < end:\n    f0()\n    g0()\n")
    out = tmp_path / "turns.apiprof"
    done = cli("run", "--sample", "--rate", "1000", "-o", str(out), str(script))
    assert done.returncode == 0, done.stderr
    export = _export(out)
    pid = int(export["meta"]["pid"])
    found = [(path, n["samples"]) for path, n in _stack_samples(export, pid)
             if n.get("samples") and any(f in path for f in ("f119", "g119"))]
    assert sum(n for _, n in found) > 200   # of ~2,000 samples at 1 kHz for 2 s
    for path, _ in found:
        names = {f[0] for f in path if f[:1] in ("f", "g") and f[1:].isdigit()}
        assert names in ({"f"}, {"g"}), path[:8]


def test_a_code_address_used_again_is_read_again(tmp_path: Path) -> None:
    """A code object the sampler has named is freed, and a new one is made at the same
    address: the new one's samples carry its own name, not the cached one."""
    script = tmp_path / "reuse.py"
    script.write_text(textwrap.dedent("""\
        import gc, time
        def spin(s):
            end = time.monotonic() + s
            while time.monotonic() < end:
                pass
        def make(name):
            ns = {"spin": spin}
            exec(compile(f"def {name}():\\n    spin(0.5)\\n", "gen.py", "exec"), ns)
            return ns[name]
        def first(f):
            f()
        def second(f):
            f()
        time.sleep(1.0)   # the sampler attaches meanwhile
        alpha = make("alpha")
        where = id(alpha.__code__)
        first(alpha)
        del alpha
        gc.collect()
        kept = []
        for _ in range(1000):
            bravo = make("bravo")
            if id(bravo.__code__) == where:
                break
            kept.append(bravo)
        print("reused" if id(bravo.__code__) == where else "not reused")
        second(bravo)
    """))
    out = tmp_path / "reuse.apiprof"
    done = cli("run", "--sample", "--rate", "200", "-o", str(out), str(script))
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() != "reused" and "libasan" in os.environ.get("LD_PRELOAD", ""):
        # `make sanitize`: PYTHONMALLOC=malloc and ASan's quarantine never give an address back
        pytest.skip("under the address sanitizer no freed address is reused")
    assert done.stdout.strip() == "reused"
    export = _export(out)
    leaves = {tuple(path[-3:]) for path, n in _stack_samples(export, int(export["meta"]["pid"]))
              if n.get("samples") and path[-1:] == ["spin"]}
    assert ("first", "alpha", "spin") in leaves, leaves
    assert ("second", "bravo", "spin") in leaves, leaves
    assert ("second", "alpha", "spin") not in leaves, leaves


# ---- errors a user can act on: one line, non-zero ------------------------------------

def _one_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"apiprof {command}: ")
    return lines[0]


def test_error_no_such_process() -> None:
    pid = 2**22 + 12345   # above pid_max's default ceiling
    done = cli("dump", str(pid))
    assert done.returncode == 4
    assert f"no process {pid}" in _one_line(done, "dump")


def test_error_not_python(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.1)
        done = cli("attach", str(sleeper.pid), "-d", "1", "-o", str(tmp_path / "x.apiprof"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.returncode == 5
    assert "is not a Python process" in _one_line(done, "attach")
    assert not (tmp_path / "x.apiprof").exists()


def test_error_unsupported_version(tmp_path: Path) -> None:
    """A process that looks like CPython 3.9 from outside: an executable with the two
    symbols apiprof-spy reads, Py_Version saying 3.9.0."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake interpreter")
    src = tmp_path / "fake.c"
    src.write_text(textwrap.dedent("""
        #include <unistd.h>
        const unsigned long Py_Version = 0x030900f0;
        char _PyRuntime[4096];
        int main(void) { write(1, "up\\n", 3); pause(); return 0; }
    """))
    exe = tmp_path / "fakepython"
    subprocess.run([cc, "-rdynamic", "-o", str(exe), str(src)], check=True)
    proc = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        done = cli("dump", str(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    assert done.returncode == 6
    line = _one_line(done, "dump")
    assert "Python 3.9.0" in line and "3.11 to 3.15" in line


def test_error_not_permitted(known_stack: subprocess.Popen[str]) -> None:
    """Another user's process: as root, apiprof-spy run as nobody against the test's
    own child; otherwise PID 1, which belongs to root."""
    if os.geteuid() == 0:
        # A copy that nobody may run (the checkout's directories may be closed to it).
        spy_dir = Path(tempfile.mkdtemp(prefix="apiprof-spy-"))
        try:
            spy_dir.chmod(0o755)
            spy = spy_dir / "apiprof-spy"
            shutil.copy(Path(apiprof.__file__).parent / "bin" / "apiprof-spy", spy)
            spy.chmod(0o755)
            done = subprocess.run([str(spy), "dump", str(known_stack.pid)], capture_output=True,
                                  text=True, user=65534, group=65534, extra_groups=[], cwd="/")
        finally:
            shutil.rmtree(spy_dir)
        pid = known_stack.pid
        prefix = "apiprof-spy: "
    else:
        done = cli("dump", "1")
        pid = 1
        prefix = "apiprof dump: "
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and lines[0].startswith(prefix)
    assert f"reading process {pid} is not permitted" in lines[0]
    assert "kernel.yama.ptrace_scope" in lines[0] and "CAP_SYS_PTRACE" in lines[0]


def test_attach_usage_errors() -> None:
    done = cli("attach", "1", "-r", "0")
    assert done.returncode == 2 and "-r: expected a rate" in done.stderr
    for opt in (["--rate", "50"], ["--requests"]):
        done = cli("run", *opt, "x.py")
        assert done.returncode == 2
        assert "--rate, --idle, --async and --requests need --sample" in done.stderr


def test_attach_subprocesses_uvicorn_workers(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """uvicorn --workers 2: attached to the supervisor, both workers are sampled, each
    thread's tree labelled with its pid and named with it; the hot function is in the
    samples of the workers that got requests (the kernel may hand every keep-alive
    connection to one of them)."""
    server = serve("spyapp:app", cwd=APPS, health="/health", args=("--workers", "2"))
    load = subprocess.Popen(
        [str(Path(apiprof.__file__).parent / "bin" / "apiprof-load"), "-c", "4", "-t", "1",
         "-d", "60", "--no-progress", f"{server.url}/hot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = tmp_path / "workers.apiprof"
        done = cli("attach", str(server.proc.pid), "-d", "3", "-o", str(out), "--subprocesses",
                   "--idle")
    finally:
        load.kill()
        load.wait()
    assert done.returncode == 0, done.stderr
    export = _export(out)
    pids = export["meta"]["sampled_pids"].split(",")
    assert pids[0] == str(server.proc.pid) and len(pids) >= 3, pids
    workers = {str(c) for c in child_pids(server.proc.pid)
               if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()}
    assert len(workers) == 2 and workers <= set(pids), (workers, pids)
    frames = export["frames"]
    sampled: dict[str, int] = {}
    hot = 0
    for tree in export["threads"]:
        pid = tree["labels"]["pid"]
        samples = sum(n.get("samples", 0) for n in tree["nodes"])
        sampled[pid] = sampled.get(pid, 0) + samples
        if pid in workers and tree["labels"]["thread"] == f"MainThread [pid {pid}]":
            hot += sum(n.get("samples", 0) for n in tree["nodes"]
                       if frames[n["frame"]]["qualname"] == "burn")
    assert all(sampled.get(w, 0) >= 100 for w in workers), sampled
    assert hot >= 100, hot


def test_top_not_a_tty(known_stack: subprocess.Popen[str]) -> None:
    """Off a terminal, one table per interval: the waiting main thread's chain is on the
    stack at every tick (--idle), the spinner's function at every tick of its thread."""
    done = cli("top", str(known_stack.pid), "-i", "0.5", "-n", "2", "--idle")
    assert done.returncode == 0, done.stderr
    tables = [t for t in done.stdout.split("\n\n") if t.strip()]
    assert len(tables) == 2
    for table in tables:
        assert table.startswith(f"apiprof top {known_stack.pid}: ")
        rows = {}
        for line in table.splitlines()[2:]:
            own, total, _cpu, where = line.split(None, 3)
            rows[where] = (float(own), float(total))
        leaf = f"leaf ({KNOWN.name}:{marker_line(KNOWN, 'WAIT') - 3})"
        assert rows[leaf][1] >= 90, rows
        spin = next(k for k in rows if k.startswith("spin ("))
        # A read torn by the spinning thread's own frame changes drops that tick of its
        # thread (docs/sampler.md): up to a quarter of them seen on 3.14.
        assert rows[spin][1] >= 50, rows
    assert "\x1b[" not in done.stdout


def test_attach_sigint_stops_and_writes(known_stack: subprocess.Popen[str],
                                        tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to apiprof attach alone: it passes it on) ends the run, the profile
    is written and the exit status is 0."""
    out = tmp_path / "int.apiprof"
    attach = subprocess.Popen([*APIPROF, "attach", str(known_stack.pid), "-o", str(out)],
                              stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    # Ctrl-C comes once the sampler runs (a SIGINT during the CLI's imports is Python's).
    deadline = time.monotonic() + 30
    while not any("apiprof-spy" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")
                  for c in child_pids(attach.pid)):
        assert time.monotonic() < deadline and attach.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)
    attach.send_signal(signal.SIGINT)
    _, err = attach.communicate(timeout=30)
    assert attach.returncode == 0, err
    assert f"wrote {out}" in err
    export = _export(out)
    assert export["meta"]["target_exited"] == "0"
    assert int(export["meta"]["sample_ticks"]) >= 20
    frames = export["frames"]
    spin = [n.get("samples", 0) for t in export["threads"] for n in t["nodes"]
            if frames[n["frame"]]["qualname"] == "spin"]
    assert sum(spin) >= 1, spin


ASYNC_APP = APPS / "spyasync_app.py"


def _wait_attached(sampler: subprocess.Popen[str], timeout: float = 30) -> None:
    """Once `apiprof attach` (sampler) runs apiprof-spy and that has written its first
    heartbeat into the middleware's board (at its first tick, a moment after it starts):
    a fixed sleep was too short for a first run after an install (the package's modules
    compiled on import)."""
    children = Path(f"/proc/{sampler.pid}/task/{sampler.pid}/children")
    deadline = time.monotonic() + timeout
    while not children.read_text().split():
        assert sampler.poll() is None, "apiprof attach ended"
        assert time.monotonic() < deadline, "apiprof attach started no apiprof-spy"
        time.sleep(0.05)
    time.sleep(0.5)


@contextlib.contextmanager
def _held(http: httpx.Client, server: Any, path: str) -> Iterator[None]:
    """A GET of path (a request of spyasync_app that waits on its Event) in flight
    meanwhile; released and answered at the end."""
    held = threading.Thread(target=http.get, args=(f"{server.url}{path}",), daemon=True)
    held.start()
    try:
        yield
    finally:
        http.get(f"{server.url}/release")
        held.join(10)


def _requests_in_flight(pid: int, want: int, timeout: float = 10) -> list[dict]:
    """`apiprof dump --json`'s requests, once want of them wait in an await."""
    deadline = time.monotonic() + timeout
    while True:
        done = cli("dump", str(pid), "--json")
        assert done.returncode == 0, done.stderr
        reqs = [r for r in json.loads(done.stdout)["requests"] if r["state"] == "awaiting"]
        if len(reqs) >= want or time.monotonic() > deadline:
            return reqs
        time.sleep(0.1)


def test_dump_shows_where_each_request_waits(serve, http, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`apiprof dump` lists the middleware's requests in flight with their await chains,
    innermost first, down to what the innermost awaits; a request that arrived while a
    sampler read the board also names its route."""
    server = serve("spyasync_app:app", cwd=APPS, health="/health")
    pid = server.proc.pid
    with _held(http, server, "/stuck"):
        [req] = _requests_in_flight(pid, 1)
        assert req["route"] is None   # no sampler read the board when it arrived
        assert req["awaits"] == "Future" and req["age_s"] > 0
        chain = [(f["qualname"], f["line"]) for f in req["frames"]]
        assert chain[0][0] == "Event.wait"
        assert chain[1:4] == [("hold", marker_line(ASYNC_APP, "AWAIT-EVENT")),
                              ("held_request", marker_line(ASYNC_APP, "AWAIT-HOLD")),
                              ("stuck", marker_line(ASYNC_APP, "AWAIT-STUCK"))]
        assert any(q == "Router.__call__" for q, _ in chain[4:])   # up to the app's entry
        text = cli("dump", str(pid))
        assert text.returncode == 0, text.stderr
        block = text.stdout.split("\nRequests in flight\n", 1)[1]
        assert f"Request {req['id']} (route not known yet)" in block
        assert "waiting in an await\n    <await Future>\n    Event.wait (" in block
        assert f"    hold ({ASYNC_APP}:{marker_line(ASYNC_APP, 'AWAIT-EVENT')})" in block
        # while a sampler reads the board, a request's route is found when it arrives
        sampler = subprocess.Popen([*APIPROF, "attach", str(pid), "-d", "30", "-o",
                                    str(tmp_path / "s.apiprof")], cwd=REPO_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_attached(sampler)
            second = threading.Thread(target=http.get, args=(f"{server.url}/stuck",), daemon=True)
            second.start()
            reqs = _requests_in_flight(pid, 2)
            assert sorted((r["route"] or "") for r in reqs) == ["", "GET /stuck"], reqs
        finally:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(30)
    # answered, the requests leave the board (a moment after their last byte is sent)
    deadline = time.monotonic() + 10
    while (left := _requests_in_flight(pid, 1, timeout=0)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


def _tasks(pid: int, ready: Callable[[list[dict]], bool], timeout: float = 10) -> list[dict]:
    """`apiprof dump --json`'s asyncio tasks, once ready(tasks) holds (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        done = cli("dump", str(pid), "--json")
        assert done.returncode == 0, done.stderr
        tasks = json.loads(done.stdout)["tasks"]
        if (tasks is not None and ready(tasks)) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.1)


def test_dump_lists_asyncio_tasks_with_their_await_chains(serve, http) -> None:  # type: ignore[no-untyped-def]
    """`apiprof dump` lists the asyncio tasks, each with its await chain: one the app
    started, and a request's from the server's task down through the middleware to the
    endpoint's await, with the request it serves (3.14+ with the thread of each)."""
    server = serve("spyasync_app:app", cwd=APPS, health="/health")
    pid = server.proc.pid
    assert http.get(f"{server.url}/spawn").status_code == 200
    with _held(http, server, "/stuck"):
        [req] = _requests_in_flight(pid, 1)

        def ready(tasks: list[dict]) -> bool:
            return (any(t["name"] == "bg-ticker" and t["state"] == "awaiting" for t in tasks)
                    and any(t["request"] == req["id"] for t in tasks))

        tasks = _tasks(pid, ready)
        assert tasks is not None and ready(tasks), tasks
        [bg] = [t for t in tasks if t["name"] == "bg-ticker"]
        assert bg["request"] is None and bg["awaits"] == "Future"
        assert [(f["qualname"], f["line"]) for f in bg["frames"]] == [
            ("Event.wait", bg["frames"][0]["line"]),
            ("hold", marker_line(ASYNC_APP, "AWAIT-EVENT")),
            ("ticker", marker_line(ASYNC_APP, "AWAIT-TICKER"))]
        [served] = [t for t in tasks if t["request"] == req["id"]]
        chain = [f["qualname"] for f in served["frames"]]
        assert served["state"] == "awaiting" and served["awaits"] == "Future"
        assert chain[:4] == ["Event.wait", "hold", "held_request", "stuck"]
        assert "ProfilerMiddleware._serve" in chain   # through the middleware's awaitable
        assert chain[-1] == "RequestResponseCycle.run_asgi"   # uvicorn's task
        if sys.version_info >= (3, 14):
            assert bg["tid"] == served["tid"] == pid   # the event loop's thread
        else:
            assert bg["tid"] is None and served["tid"] is None
        text = cli("dump", str(pid))
        assert text.returncode == 0, text.stderr
        block = text.stdout.split("\nasyncio tasks\n", 1)[1]
        assert ('Task "bg-ticker"' + (f" (thread {pid})" if sys.version_info >= (3, 14) else "")
                + ": waiting in an await\n    <await Future>\n    Event.wait (") in block
        assert f", request {req['id']}: waiting in an await" in block


def test_dump_follows_an_await_into_an_async_generator(serve, http) -> None:  # type: ignore[no-untyped-def]
    """A request whose dependency with yield (an async generator) waits in its cleanup:
    the chain goes on through the generator's asend() into the generator, down to what
    it awaits, instead of ending at <await async_generator_asend>."""
    server = serve("spyasync_app:app", cwd=APPS, health="/health")
    pid = server.proc.pid
    with _held(http, server, "/cleanup"):
        [req] = _requests_in_flight(pid, 1)
        chain = [(f["qualname"], f["line"]) for f in req["frames"]]
        assert req["awaits"] == "Future", req
        assert chain[0][0] == "Event.wait"
        assert chain[1] == ("session", marker_line(ASYNC_APP, "AWAIT-CLEANUP"))
        assert chain[2][0] == "_AsyncGeneratorContextManager.__aexit__"


def test_dump_of_tasks_without_the_middleware(tmp_path: Path) -> None:
    """The tasks of any asyncio program are listed, nothing of apiprof in it: 3.14+ from
    asyncio's own lists, before from its registries found through sys.modules; a program
    without asyncio has none."""
    prog = tmp_path / "loop.py"
    prog.write_text(
        "import asyncio, sys\n"
        "async def worker():\n"
        "    await asyncio.sleep(60)\n"
        "async def main():\n"
        "    t = asyncio.create_task(worker(), name='worker-1')\n"
        "    await asyncio.sleep(0)\n"
        "    print('ready', flush=True)\n"
        "    await t\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, str(prog)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        tasks = _tasks(proc.pid, lambda ts: any(t["name"] == "worker-1" for t in ts))
        [w] = [t for t in tasks if t["name"] == "worker-1"]
        assert [f["qualname"] for f in w["frames"]] == ["sleep", "worker"]
        assert w["request"] is None and w["awaits"] == "Future"
        assert w["tid"] == (proc.pid if sys.version_info >= (3, 14) else None)
        # the main task awaits the worker's task: its chain goes on into it
        [main] = [t for t in tasks if t["name"] != "worker-1"]
        assert [f["qualname"] for f in main["frames"]] == ["sleep", "worker", "main"]
        assert main["awaits"] == "Future"
    finally:
        proc.kill()
        proc.wait()
    # no asyncio in it: no tasks, said so
    plain = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True); input()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert plain.stdout is not None and plain.stdout.readline() == "ready\n"
        done = cli("dump", str(plain.pid), "--json")
        assert done.returncode == 0
        tasks = json.loads(done.stdout)["tasks"]
        text = cli("dump", str(plain.pid))
        assert text.returncode == 0
        if tasks is None:
            assert ("No asyncio tasks: " + ("the _asyncio module is not loaded"
                                             if sys.version_info >= (3, 14)
                                             else "asyncio is not imported")) in text.stdout
        else:   # _asyncio built into the interpreter (Debian's 3.15): an empty list
            assert tasks == [] and sys.version_info >= (3, 14)
            assert "\nasyncio tasks: none\n" in text.stdout
    finally:
        plain.kill()
        plain.wait()


def test_attach_requests_labels_the_samples_of_each_request(serve, http, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """attach --requests: the samples of a request (running on the loop's thread, or
    waiting in an await with --async) carry its number as well as its route, and
    `apiprof report --request N` shows that request alone."""
    server = serve("spyasync_app:app", cwd=APPS, health="/health")
    pid = server.proc.pid
    out = tmp_path / "req.apiprof"
    sampler = subprocess.Popen([*APIPROF, "attach", str(pid), "-d", "60", "--async", "--requests",
                                "-o", str(out)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _wait_attached(sampler)   # the requests from now on are published
    with _held(http, server, "/stuck"):
        [stuck] = _requests_in_flight(pid, 1)
        for _ in range(3):
            assert http.get(f"{server.url}/burn").status_code == 200
        sampler.send_signal(signal.SIGINT)   # stops it, the profile written
        _, err = sampler.communicate(timeout=30)
        assert sampler.returncode == 0, err
    export = _export(out)
    assert export["meta"]["sample_requests"] == "1"
    frames = export["frames"]
    burned: dict[str, int] = {}
    waited = set()
    for tree in export["threads"]:
        labels = tree["labels"]
        names = {frames[n["frame"]]["qualname"] for n in tree["nodes"]}
        if labels["thread"] == "awaiting" and "held_request" in names:
            waited.add((labels.get("route"), labels.get("request")))
        elif "burn" in names:
            assert labels.get("route") == "GET /burn", labels
            burned[labels["request"]] = sum(n.get("samples", 0) for n in tree["nodes"])
    assert waited == {("GET /stuck", str(stuck["id"]))}
    assert len(burned) == 3 and str(stuck["id"]) not in burned, burned   # one per request
    one = min(burned)
    text = cli("report", str(out), "--request", one, "--all")
    assert text.returncode == 0, text.stderr
    assert "burn" in text.stdout and "held_request" not in text.stdout
    missing = cli("report", str(out), "--request", "999999")
    assert missing.returncode != 0
    assert "no part of the profile has request=999999 (it has: " in missing.stderr


def test_attach_async_samples_the_await_chains_of_waiting_requests(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """attach --async: each request waiting in an await is sampled as its await chain
    (thread "awaiting", its route), with await time, down to an <await ...> frame of
    what it awaits; the report's finding names the awaited call and the user's line."""
    server = serve("spyasync_app:app", cwd=APPS, health="/health")
    httpx.get(f"{server.url}/spawn").raise_for_status()   # a task of the app's, waiting
    httpx.get(f"{server.url}/spin").raise_for_status()    # and one running on the CPU
    urls = tmp_path / "urls.txt"
    urls.write_text(f"GET {server.url}/wait\nGET {server.url}/gathered\n")
    load = subprocess.Popen(
        [str(Path(apiprof.__file__).parent / "bin" / "apiprof-load"), "-c", "4", "-t", "1",
         "-d", "60", "--no-progress", "--urls", str(urls)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "async.apiprof"
    try:
        # the sampler must be reading the board when requests arrive (their routes)
        done = cli("attach", str(server.proc.pid), "-d", "3", "--async", "-o", str(out))
    finally:
        load.kill()
        load.wait()
    assert done.returncode == 0, done.stderr
    export = _export(out)
    assert export["meta"]["sample_async"] == "1"
    assert int(export["meta"]["sample_awaiting"]) > 0
    frames = export["frames"]
    waits: dict[str, dict[tuple[str, ...], int]] = {}
    ticker_tasks: set[str] = set()
    spinning = 0
    for tree in export["threads"]:
        if tree["labels"]["thread"] != "awaiting":
            # the samples of the loop thread while it runs a named task carry its name
            for node in tree["nodes"]:
                if frames[node["frame"]]["qualname"] == "spin" and node.get("samples"):
                    assert tree["labels"].get("task") == "spinner", tree["labels"]
                    spinning += node["samples"]
            continue
        assert "thread_id" in tree["labels"] and tree["labels"]["pid"] == str(server.proc.pid)
        paths: list[tuple[str, ...]] = []
        for node in tree["nodes"]:
            parent = node["parent"]
            path = () if parent < 0 else paths[parent] + (frames[node["frame"]]["qualname"],)
            paths.append(path)
            # awaiting is not running: no samples, wall or CPU time on these trees
            assert not (node.get("samples") or node.get("self_ns") or node.get("cpu_ns")), node
            if node.get("await_ns") and path and path[-1].startswith("<await "):
                route = waits.setdefault(tree["labels"].get("route", ""), {})
                route[path] = route.get(path, 0) + node["await_ns"]
                if "ticker" in path:
                    ticker_tasks.add(tree["labels"].get("task", ""))
    assert set(waits) <= {"GET /wait", "GET /gathered", ""}, set(waits)
    # every task waiting is sampled, the app's own too (no route)
    bg = max(waits[""].items(), key=lambda kv: kv[1] if "ticker" in kv[0] else 0)[0]
    assert bg[-4:] == ("ticker", "hold", "Event.wait", "<await Future>"), waits[""]
    assert ticker_tasks == {"bg-ticker"}   # named tasks are labelled, waiting or running
    assert spinning > 0
    wait_leaf = max(waits["GET /wait"].items(), key=lambda kv: kv[1])[0]
    assert wait_leaf[-5:] == ("wait", "fetch_rows", "query_db", "sleep", "<await Future>")
    gather_leaf = max(waits["GET /gathered"].items(), key=lambda kv: kv[1])[0]
    assert gather_leaf[-2:] == ("gathered", "<await _GatheringFuture>")
    report = cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "waiting: GET /wait spends" in report.stdout
    assert "awaiting sleep (asyncio/tasks.py:" in report.stdout
    assert "called from query_db (apps/spyasync_app.py:" in report.stdout
    # the HTML flame graph, library frames folded (the default), still shows what the
    # folded run awaits
    from cdp import Browser

    html = tmp_path / "async.html"
    assert cli("report", str(out), "--metric", "await", "-o", str(html)).returncode == 0
    with Browser(tmp_path / "chromium") as browser:
        page = browser.open(html.as_uri())
        page.wait_for("document.body.dataset.ready === '1'")
        page.eval("window.apiprof.show('flame')")
        assert page.eval("document.getElementById('fold-lib').checked")
        assert page.eval("window.apiprof.rectOf('<await Future>')") is not None
