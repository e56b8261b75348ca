"""apiprof's tracer beside the standard library's sampler (3.15+: python -m profiling.sampling).

    python bench/sampling_compare.py [--seconds S] [--rate R ...] [--reps N]

The workloads of trace_overhead.py (fib, Hanoi, template rendering, a FastAPI request
loop) each run in a child process for about S seconds; the child times its own iterations,
so "target ms/iter" is what the profiled program pays: plain (baseline), under apiprof's
tracer (in-process), and under `python -m profiling.sampling run` at each rate (a separate
process reading the target's memory). "sampler CPU" is the CPU the sampling process
itself used (the process tree's CPU minus the target's), the cost apiprof does not have.
"hot" is the top three Python functions by self time: apiprof's exact self time, the
sampler's leaf-frame samples; "same" says how many of the sampler's three are apiprof's.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("fib", "hanoi", "template", "fastapi")


def workload(name: str) -> Callable[[], Any]:
    sys.path.insert(0, HERE)
    import trace_overhead as t

    if name == "fib":
        return lambda: t.fib(25)
    if name == "hanoi":
        return lambda: t.hanoi(16, "a", "c", "b", [])
    if name == "template":
        return lambda: t.render_pages(10)
    return t.make_fastapi_loop(50)


HARNESS = {"measured", "<lambda>", "child", "main"}   # this script's frames, not the workload's


def top_apiprof(functions: list[dict[str, Any]]) -> list[str]:
    py = [f for f in functions
          if f["kind"] == "python" and f["qualname"].rsplit(".", 1)[-1] not in HARNESS]
    py.sort(key=lambda f: -f["self_ns"])
    return [f["qualname"].rsplit(".", 1)[-1] for f in py[:3]]


def top_collapsed(path: str) -> tuple[list[str], int]:
    """Leaf-frame counts of a collapsed-stacks file (``frame;frame;... count``, a frame
    ``file:function:line``), of the stacks inside measured() (not start-up or warm-up):
    the top three functions and the number of samples."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    # The sampler writes names as it read them from the target's memory: a torn read can
    # leave bytes that are not UTF-8.
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit() or ":measured:" not in stack:
                continue
            total += int(n)
            leaf = stack.rsplit(";", 1)[-1].rsplit(":", 2)
            name = (leaf[1] if len(leaf) == 3 else leaf[0]).rsplit(".", 1)[-1]
            if name not in HARNESS:
                counts[name] += int(n)
    return [name for name, _ in counts.most_common(3)], total


def measured(fn: Callable[[], Any], seconds: float, iters: int) -> tuple[int, float, float]:
    """Run fn iters times (0: for seconds): (iterations, wall s, CPU s)."""
    c0, t0 = time.process_time(), time.perf_counter()
    n = 0
    while (iters and n < iters) or (not iters and time.perf_counter() - t0 < seconds):
        fn()
        n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


def child(name: str, seconds: float, iters: int, apiprof_out: str | None) -> int:
    fn = workload(name)
    fn()  # warm up: imports, caches, specialisation
    prof = None
    if apiprof_out:
        import apiprof

        prof = apiprof.Profiler().start()
    n, dt, dc = measured(fn, seconds, iters)
    if prof is not None:
        prof.stop()
        with open(apiprof_out, "w") as f:
            json.dump(top_apiprof(prof.functions()), f)
    print(json.dumps({"iters": n, "s": dt, "cpu": dc}))
    return 0


def run_child(args: list[str], prefix: list[str] | None = None) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, *(prefix or []), os.path.abspath(__file__), "--child",
                        *args], capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    out["tree_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out["ms_per_iter"] = out["s"] / out["iters"] * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per run (default 2)")
    parser.add_argument("--rate", action="append", help="sampling rates (default 1khz, 10khz)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--iters", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--apiprof-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.seconds, args.iters, args.apiprof_out)
    if importlib.util.find_spec("profiling.sampling") is None:
        print(f"Python {platform.python_version()} has no profiling.sampling (3.15+): nothing "
              "to compare")
        return 0
    rates = args.rate or ["1khz", "10khz"]
    result: dict[str, Any] = {"bench": "sampling_compare", "python": platform.python_version(),
                              "reps": args.reps, "workloads": {}}
    print(f"apiprof vs profiling.sampling, Python {result['python']}, median of {args.reps} "
          "reps; target ms/iter (x = ratio to baseline)")
    with tempfile.TemporaryDirectory() as tmp:
        for w in WORKLOADS:
            iters = run_child([w, "--seconds", str(args.seconds)])["iters"]
            common = [w, "--iters", str(iters)]
            runs: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
            hot: dict[str, list[str]] = {}
            samples: dict[str, int] = {}
            for _ in range(args.reps):
                runs["baseline"].append(run_child(common))
                out = os.path.join(tmp, "apiprof.json")
                runs["apiprof"].append(run_child([*common, "--apiprof-out", out]))
                with open(out) as f:
                    hot["apiprof"] = json.load(f)
                for rate in rates:
                    stacks = os.path.join(tmp, "stacks.txt")
                    runs[f"sampler {rate}"].append(run_child(common, [
                        "-m", "profiling.sampling", "run", "-r", rate, "--collapsed",
                        "-o", stacks]))
                    hot[f"sampler {rate}"], samples[f"sampler {rate}"] = top_collapsed(stacks)
            med = {t: {k: statistics.median(r[k] for r in rs)
                       for k in ("ms_per_iter", "cpu", "tree_cpu")} for t, rs in runs.items()}
            base = med["baseline"]["ms_per_iter"]
            print(f"\n{w} ({iters} iters/run): baseline {base:.2f} ms/iter")
            entry: dict[str, Any] = {"iters": iters, "tools": {}}
            for t, m in med.items():
                if t == "baseline":
                    continue
                same = len(set(hot[t]) & set(hot["apiprof"]))
                sampler_cpu = m["tree_cpu"] - m["cpu"] if t.startswith("sampler") else 0.0
                extra = f", sampler CPU {sampler_cpu:.2f}s, {samples[t]} samples" \
                    if t.startswith("sampler") else ""
                print(f"  {t:15} {m['ms_per_iter']:8.2f} ms/iter ({m['ms_per_iter'] / base:.2f}x)"
                      f"  hot {', '.join(hot[t])}  same {same}/{len(hot[t])}{extra}")
                entry["tools"][t] = {"ms_per_iter": round(m["ms_per_iter"], 3),
                                     "ratio": round(m["ms_per_iter"] / base, 3),
                                     "hot": hot[t], "same_as_apiprof": same,
                                     "sampler_cpu_s": round(sampler_cpu, 3),
                                     "samples": samples.get(t)}
            result["workloads"][w] = entry
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
