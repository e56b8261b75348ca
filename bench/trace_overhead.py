"""Function-tracing overhead: apiprof vs cProfile vs yappi (wall) vs pyinstrument, side by side.

    python bench/trace_overhead.py [--reps N] [--quick] [--tools NAME,NAME,...]

Workloads: fib(25), Towers of Hanoi, a template-rendering-like pure-Python workload, and a
FastAPI request loop through httpx.ASGITransport. Each rep runs every tool on every
workload in turn (same process, same minute); the median of the reps is reported, with the
overhead ratio to the baseline and apiprof's extra time as a fraction of cProfile's.
"apiprof --cpu" adds the per-function thread CPU split (Profiler(cpu=True)); its peer is
"yappi (cpu)", yappi on its CPU clock. apiprof records event-loop stalls by default
(Profiler(stall_threshold=0.05)); "apiprof no-stalls" turns that off and "apiprof +locks"
adds lock-wait timing (Profiler(locks=True), on in apiprof run), so the difference of each
to "apiprof" is what stall detection and lock timing cost. "hooks-only" is apiprof with
every function filtered out: what the interpreter charges for delivering events to any
hook, before the profiler does any work.
On 3.15+ profiling.tracing (cProfile's new home) runs too. yappi and pyinstrument are
installed into the running interpreter's environment with pip if they are missing (they
are benchmark peers, not dependencies of apiprof); one that does not install on this
Python is left out and named.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import html
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import apiprof
from _peers import ensure_peers

PEERS = {"yappi": "yappi", "pyinstrument": "pyinstrument"}



# ---- workloads ----------------------------------------------------------------------


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def hanoi(n: int, src: str, dst: str, via: str, moves: list[tuple[str, str]]) -> None:
    if n == 0:
        return
    hanoi(n - 1, src, via, dst, moves)
    moves.append((src, dst))
    hanoi(n - 1, via, dst, src, moves)


TEMPLATE = (
    "<h1>{{ title }}</h1><ul>{% for item in items %}<li class='{{ item.kind }}'>"
    "{{ item.name }}: {{ item.price }}</li>{% endfor %}</ul><p>{{ footer }}</p>"
)


def tokenize(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(src):
        j = src.find("{", i)
        if j < 0 or j + 1 >= len(src) or src[j + 1] not in "{%":
            end = len(src) if j < 0 else j + 1
            out.append(("text", src[i:end]))
            i = end
            continue
        if j > i:
            out.append(("text", src[i:j]))
        close = "}}" if src[j + 1] == "{" else "%}"
        k = src.index(close, j)
        out.append(("var" if close == "}}" else "tag", src[j + 2 : k].strip()))
        i = k + 2
    return out


def lookup(ctx: dict[str, Any], path: str) -> Any:
    value: Any = ctx
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def render_tokens(tokens: list[tuple[str, str]], ctx: dict[str, Any], out: list[str]) -> int:
    i = 0
    while i < len(tokens):
        kind, val = tokens[i]
        if kind == "text":
            out.append(val)
        elif kind == "var":
            out.append(html.escape(str(lookup(ctx, val))))
        elif val.startswith("for "):
            _, name, _, seq = val.split()
            depth, j = 1, i + 1
            while depth:
                if tokens[j][0] == "tag":
                    depth += tokens[j][1].startswith("for ") - (tokens[j][1] == "endfor")
                j += 1
            for item in lookup(ctx, seq):
                render_tokens(tokens[i + 1 : j - 1], {**ctx, name: item}, out)
            i = j - 1
        i += 1
    return len(out)


def render_pages(pages: int) -> int:
    tokens = tokenize(TEMPLATE)
    items = [{"name": f"item {i}", "price": f"{i * 1.25:.2f}", "kind": "odd" if i % 2 else "even"}
             for i in range(60)]
    total = 0
    for p in range(pages):
        out: list[str] = []
        render_tokens(tokens, {"title": f"page {p}", "items": items, "footer": "<end>"}, out)
        total += len("".join(out))
    return total


def make_fastapi_loop(requests: int) -> Callable[[], Any]:
    import httpx
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Item(BaseModel):
        id: int
        name: str
        tags: list[str]

    app = FastAPI()

    @app.get("/items/{item_id}", response_model=Item)
    async def get_item(item_id: int, q: str = ""):
        return Item(id=item_id, name=f"item {item_id}{q}", tags=["a", "b", str(item_id % 7)])

    async def loop() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            n = 0
            for i in range(requests):
                r = await client.get(f"/items/{i}", params={"q": "x"})
                n += r.status_code == 200
            return n

    return lambda: asyncio.run(loop())


# ---- tools --------------------------------------------------------------------------


def run_baseline(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_apiprof(fn: Callable[[], Any]) -> float:
    p = apiprof.Profiler()
    t0 = time.perf_counter()
    p.start()
    fn()
    p.stop()
    return time.perf_counter() - t0


def run_apiprof_with(fn: Callable[[], Any], **options: Any) -> float:
    p = apiprof.Profiler(**options)
    t0 = time.perf_counter()
    p.start()
    fn()
    p.stop()
    return time.perf_counter() - t0


def run_apiprof_cpu(fn: Callable[[], Any]) -> float:
    """apiprof with the per-function thread CPU split (cpu=True, apiprof run --cpu)."""
    p = apiprof.Profiler(cpu=True)
    t0 = time.perf_counter()
    p.start()
    fn()
    p.stop()
    return time.perf_counter() - t0


def run_apiprof_floor(fn: Callable[[], Any]) -> float:
    """apiprof's hooks installed with every function filtered out: the interpreter's
    cost of delivering the events (3.11: the profile hook; 3.12+: DISABLEd locations)."""
    p = apiprof.Profiler(include=["<nothing>"], builtins=False)
    t0 = time.perf_counter()
    p.start()
    fn()
    p.stop()
    return time.perf_counter() - t0


def run_cprofile(fn: Callable[[], Any]) -> float:
    p = cProfile.Profile()
    t0 = time.perf_counter()
    p.enable()
    fn()
    p.disable()
    return time.perf_counter() - t0


def run_profiling_tracing(fn: Callable[[], Any]) -> float:
    """3.15+: cProfile's new home, profiling.tracing."""
    import profiling.tracing  # type: ignore[import-not-found]

    p = profiling.tracing.Profile()
    t0 = time.perf_counter()
    p.enable()
    fn()
    p.disable()
    return time.perf_counter() - t0


def run_yappi(fn: Callable[[], Any], clock: str = "wall") -> float:
    import yappi

    yappi.set_clock_type(clock)
    t0 = time.perf_counter()
    yappi.start(builtins=True)
    fn()
    yappi.stop()
    dt = time.perf_counter() - t0
    yappi.clear_stats()
    return dt


def run_pyinstrument(fn: Callable[[], Any]) -> float:
    from pyinstrument import Profiler

    p = Profiler(interval=0.001)
    t0 = time.perf_counter()
    p.start()
    fn()
    p.stop()
    return time.perf_counter() - t0


TOOLS: dict[str, Callable[[Callable[[], Any]], float]] = {
    "baseline": run_baseline, "apiprof": run_apiprof, "hooks-only": run_apiprof_floor,
    # What stall detection (on by default) and lock timing (apiprof run) add.
    "apiprof no-stalls": lambda fn: run_apiprof_with(fn, stall_threshold=None),
    "apiprof +locks": lambda fn: run_apiprof_with(fn, locks=True),
    "cProfile": run_cprofile, "profiling.tracing": run_profiling_tracing,
    "yappi": run_yappi, "pyinstrument": run_pyinstrument,
    # Per-function CPU time: apiprof's CPU split beside yappi's CPU clock.
    "apiprof --cpu": run_apiprof_cpu, "yappi (cpu)": lambda fn: run_yappi(fn, "cpu"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 3 reps")
    parser.add_argument("--tools", help="comma-separated tools to run (baseline, apiprof and "
                        "cProfile always run)")
    args = parser.parse_args(argv)
    if args.tools:
        keep = {"baseline", "apiprof", "cProfile", *args.tools.split(",")}
        unknown = keep - set(TOOLS)
        if unknown:
            parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
        for name in list(TOOLS):
            if name not in keep:
                TOOLS.pop(name)
    absent = ensure_peers(PEERS)
    if importlib.util.find_spec("profiling") is None:
        absent.append("profiling.tracing")   # 3.15+
    for name in absent:
        print(f"{name}: not available on Python {platform.python_version()}, left out")
        TOOLS.pop(name, None)
        if name == "yappi":
            TOOLS.pop("yappi (cpu)", None)
    scale = 0.25 if args.quick else 1.0
    reps = 3 if args.quick else args.reps
    workloads: dict[str, Callable[[], Any]] = {
        "fib(25)": lambda: fib(25 if not args.quick else 21),
        "hanoi(17)": lambda: hanoi(17 if not args.quick else 15, "a", "c", "b", []),
        "template": lambda: render_pages(int(40 * scale)),
        "fastapi": make_fastapi_loop(int(300 * scale)),
    }
    for fn in workloads.values():  # warm up: imports, caches, specialisation
        fn()
    times: dict[str, dict[str, list[float]]] = {w: {t: [] for t in TOOLS} for w in workloads}
    for _ in range(reps):
        for wname, fn in workloads.items():
            for tname, tool in TOOLS.items():
                times[wname][tname].append(tool(fn))
    med = {w: {t: statistics.median(v) for t, v in d.items()} for w, d in times.items()}
    py = platform.python_version()
    print(f"trace overhead, Python {py}, median of {reps} reps (ms; x = ratio to baseline)")
    header = ["workload", "baseline", *[f"{t}" for t in TOOLS if t != "baseline"],
              "apiprof extra / cProfile extra"]
    rows = [header]
    result: dict[str, Any] = {"bench": "trace_overhead", "python": py, "reps": reps,
                              "workloads": {}}
    for w, m in med.items():
        base = m["baseline"]
        cells = [w, f"{base * 1e3:.1f}"]
        for t in TOOLS:
            if t != "baseline":
                cells.append(f"{m[t] * 1e3:.1f} ({m[t] / base:.2f}x)")
        extra_ratio = (m["apiprof"] - base) / (m["cProfile"] - base) if m["cProfile"] > base else 0
        cells.append(f"{extra_ratio:.2f}")
        rows.append(cells)
        result["workloads"][w] = {
            "ms": {t: round(v * 1e3, 3) for t, v in m.items()},
            "ratio": {t: round(v / base, 3) for t, v in m.items()},
            "apiprof_extra_over_cprofile_extra": round(extra_ratio, 3),
        }
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join([r[0].ljust(widths[0]), *[c.rjust(wd) for c, wd in zip(r[1:], widths[1:],
                                                                                strict=True)]]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
