"""apiprof.LineProfiler and @apiprof.profile: line profiling (the work is in C: _core.LineTracer)"""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from . import _core
from ._table import Column, format_bytes, format_ns, printable, render_lines

F = TypeVar("F", bound=Callable[..., Any])

# Functions marked with @profile, in marking order, and the running profilers
# that follow marks (apiprof lines): a function marked later is added to them.
_marked: list[Any] = []
_followers: list[LineProfiler] = []


def profile(func: F) -> F:
    """Mark ``func`` (function, method, async function, generator) for line profiling.

    Returns ``func`` itself: outside a profiling run it costs nothing. Under
    ``apiprof lines`` (or a ``LineProfiler(marked=True)``) its lines are recorded.
    """
    _marked.append(func)
    for p in list(_followers):
        p.add_function(func)
    return func


def marked() -> list[Any]:
    """The functions marked with ``@apiprof.profile`` so far."""
    return list(_marked)


def code_objects(obj: Any) -> list[types.CodeType]:
    """The code objects to profile for ``obj``: a function (decorators that set
    ``__wrapped__`` are looked through), a bound method, classmethod,
    staticmethod, property, functools.partial, a class (its functions) or a
    module (functions and classes defined in it). TypeError for anything else."""
    seen: set[int] = set()
    out: list[types.CodeType] = []

    def visit(o: Any, depth: int, module: str | None) -> bool:
        if id(o) in seen or depth > 8:
            return False
        seen.add(id(o))
        found = False
        if isinstance(o, types.CodeType):
            out.append(o)
            return True
        if isinstance(o, (classmethod, staticmethod)):
            return visit(o.__func__, depth + 1, module)
        if isinstance(o, types.MethodType):
            return visit(o.__func__, depth + 1, module)
        if isinstance(o, property):
            for acc in (o.fget, o.fset, o.fdel):
                if acc is not None:
                    found = visit(acc, depth + 1, module) or found
            return found
        if isinstance(o, functools.partial):
            return visit(o.func, depth + 1, module)
        if isinstance(o, types.FunctionType):
            if module is not None and o.__module__ != module:
                return False
            out.append(o.__code__)
            wrapped = getattr(o, "__wrapped__", None)
            if wrapped is not None:
                visit(wrapped, depth + 1, module)
            return True
        if isinstance(o, (type, types.ModuleType)):
            name = o.__name__ if isinstance(o, types.ModuleType) else module
            if isinstance(o, type) and module is not None and o.__module__ != module:
                return False
            for v in list(vars(o).values()):
                if isinstance(v, (type, types.FunctionType, classmethod, staticmethod, property)):
                    found = visit(v, depth + 1, name) or found
            return found
        wrapped = getattr(o, "__wrapped__", None)
        if wrapped is not None:
            return visit(wrapped, depth + 1, module)
        return False

    if not visit(obj, 0, None):
        raise TypeError(f"cannot line-profile {obj!r}: not a function, method, class or module "
                        "with Python code")
    return out


def statement_starts(code: types.CodeType) -> dict[int, int]:
    """For each line of ``code``'s file that continues a statement begun on an
    earlier line, that first line (the line tracer counts one hit per
    execution of a statement, whatever lines its events come from). The
    statement of a compound statement (if, for, while, with, def, class,
    except ...) is its header: decorators, condition, items, up to the body.
    Empty when the source cannot be read or parsed."""
    lines = linecache.getlines(code.co_filename)
    return _file_statements(code.co_filename, "".join(lines)) if lines else {}


@functools.lru_cache(maxsize=64)
def _file_statements(filename: str, source: str) -> dict[int, int]:
    try:
        tree = ast.parse(source, filename)
    except (SyntaxError, ValueError):
        return {}
    starts: dict[int, int] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.stmt, ast.ExceptHandler)):
            continue
        first = node.lineno
        decorators = getattr(node, "decorator_list", None)
        if decorators:
            first = min(first, *(d.lineno for d in decorators))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            last = max(node.lineno, body[0].lineno - 1)
        else:
            last = node.end_lineno or node.lineno
        for line in range(first + 1, last + 1):
            starts.setdefault(line, first)
    return starts


class LineProfiler:
    """Line-by-line profiler of chosen functions: hits, time, time per hit, % of the
    function, and await time (coroutines) per line, in every thread.

    ``LineProfiler(*functions)``; ``add_function(f)`` (also while running; classes
    and modules add their functions); ``start()`` / ``stop()``, ``with``, or
    ``lp(func)`` for a wrapper that profiles while ``func`` runs. With
    ``marked=True`` the functions marked with ``@apiprof.profile`` (now or later)
    are profiled too. Only the chosen functions pay: on 3.12+ no other code is
    instrumented at all.

    ``memory="full"`` (every block, exact) or ``"sampled"`` (``memory_rate``,
    ``memory_seed``: as for ``Profiler``) also records per line the bytes allocated
    while it ran (the functions it calls included, as its time) and the bytes of those
    allocated while profiling that it freed: ``alloc_bytes``, ``freed_bytes`` and
    ``net_bytes`` = allocated - freed (docs/memory.md, "Line level").
    """

    def __init__(self, *functions: Any, marked: bool = False, memory: str | None = None,
                 memory_rate: int = 512 * 1024, memory_seed: int = 0) -> None:
        self._tracer = _core.LineTracer(threads=threading._active)  # type: ignore[attr-defined]
        self._memory: Any = None
        if memory is not None:
            if memory not in ("full", "sampled"):
                raise ValueError(f"memory must be 'full', 'sampled' or None, not {memory!r}")
            self._memory = _core.MemoryTracker(self._tracer, mode=memory, rate=memory_rate,
                                               seed=memory_seed)
        self.memory = memory
        self._depth = 0
        self._follow = marked
        self.functions: list[Any] = []
        for f in functions:
            self.add_function(f)
        if marked:
            for f in _marked:
                self.add_function(f)

    def add_function(self, func: Any) -> None:
        """Profile the lines of ``func`` (see ``code_objects``)."""
        codes = code_objects(func)
        self.functions.append(func)
        for code in codes:
            self._tracer.add_code(code)

    def add_module(self, module: types.ModuleType) -> None:
        """Profile every function and method defined in ``module``."""
        self.add_function(module)

    @property
    def running(self) -> bool:
        return bool(self._tracer.running)

    def start(self) -> LineProfiler:
        self._tracer.start()
        if self._memory is not None:
            try:
                self._memory.start()
            except BaseException:
                self._tracer.stop()
                raise
        if self._follow and self not in _followers:
            _followers.append(self)
        return self

    def stop(self) -> LineProfiler:
        """Stop recording; frames still running are closed now. Idempotent."""
        if self in _followers:
            _followers.remove(self)
        if self._memory is not None:
            self._memory.stop()
        self._tracer.stop()
        return self

    enable = start
    disable = stop

    def __enter__(self) -> LineProfiler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, func: F) -> F:
        """Add ``func`` and return a wrapper that records while it runs (sync,
        async or generator function)."""
        self.add_function(func)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                owner = self._enter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    self._leave(owner)

            return awrapper  # type: ignore[return-value]
        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gwrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                owner = self._enter()
                try:
                    return (yield from func(*args, **kwargs))
                finally:
                    self._leave(owner)

            return gwrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            owner = self._enter()
            try:
                return func(*args, **kwargs)
            finally:
                self._leave(owner)

        return wrapper  # type: ignore[return-value]

    def _enter(self) -> bool:
        if self.running:
            return False
        self.start()
        return True

    def _leave(self, owner: bool) -> None:
        if owner:
            self.stop()

    @property
    def profile(self) -> Any:
        """The recorded apiprof._core.Profile (live)."""
        return self._tracer.profile()

    def lines(self) -> list[dict[str, Any]]:
        """One dict per line that ran: file, function (qualname), function_line,
        line, hits, time_ns (callees included), await_ns; all threads summed."""
        return list(self.profile.lines())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the native file (``apiprof report FILE`` shows the lines)."""
        self.profile.save(os.fspath(path))

    def print(self, file: IO[str] | None = None) -> None:
        """Print the line report (source with hits, time, per hit, % time, await)."""
        out = file if file is not None else sys.stdout
        out.write(format_lines(self.profile))


def is_line_profile(profile: Any) -> bool:
    return profile.meta.get("tool") == "apiprof lines"


_SourceLine = tuple[int, str, dict[str, Any] | None]  # (number, text, figures if it ran)


def _signed_bytes(n: int) -> str:
    return ("-" if n < 0 else "+" if n > 0 else "") + format_bytes(abs(n))


def _line_columns(function_ns: int, memory: bool) -> list[Column[_SourceLine]]:
    """The line_profiler-style columns; "% Time" is of ``function_ns``, the lines' sum.
    With ``memory`` (a line profile with memory): Alloc and Net (allocated - freed)
    before the line's contents."""

    def ran(show: Callable[[dict[str, Any]], str]) -> Callable[[_SourceLine], str]:
        return lambda line: "" if line[2] is None else show(line[2])

    mem: list[Column[_SourceLine]] = [
        Column("Alloc", ran(lambda r: format_bytes(r["alloc_bytes"]) if "alloc_bytes" in r
                            else "")),
        Column("Net", ran(lambda r: _signed_bytes(r["net_bytes"]) if "net_bytes" in r else "")),
    ] if memory else []
    return [
        Column("Line #", lambda line: str(line[0])),
        Column("Hits", ran(lambda r: str(r["hits"]))),
        Column("Time", ran(lambda r: format_ns(r["time_ns"]))),
        Column("Per Hit", ran(lambda r: format_ns(r["time_ns"] / r["hits"]) if r["hits"] else "-")),
        Column("% Time", ran(lambda r: f"{100.0 * r['time_ns'] / function_ns:.1f}"
                             if function_ns else "-")),
        Column("Await", ran(lambda r: format_ns(r["await_ns"]) if r["await_ns"] else "")),
        *mem,
        Column("Line Contents", lambda line: line[1], "free"),
    ]


def format_lines(profile: Any, only: set[str] | None = None) -> str:
    """The line_profiler-style text report of a line profile, functions by time
    (most first): per function its calls, time and await, then every source line
    with Line #, Hits, Time, Per Hit, % Time (of the function's time), Await, Line
    Contents."""
    funcs = {(f["file"], f["line"], f["qualname"]): f for f in profile.functions()}
    targets = [f for f in profile.frames() if f["kind"] == "python" and f["lineno"] == 0]
    by_func: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in profile.lines():
        by_func.setdefault((row["file"], row["function_line"], row["function"]), []).append(row)
    # The functions that took the most time first (as the function table sorts), then
    # in source order (those that never ran last).
    keys = sorted({(t["file"], t["line"], t["qualname"]) for t in targets},
                  key=lambda k: (-(funcs[k]["total_ns"] if k in funcs else -1), k))
    if only is not None:
        keys = [k for k in keys if k[2] in only]
    memory = profile.meta.get("memory_attribution") == "lines"
    out = [f"apiprof line profile (clock: {profile.meta.get('clock', 'wall')}); time per line "
           "includes the functions it calls"
           + (f"; so do Alloc (bytes allocated) and Net (allocated - freed) (memory: "
              f"{profile.meta.get('memory')})" if memory else "")]
    for key in keys:
        file, first, qualname = key
        f = funcs.get(key)
        calls = f["calls"] if f else 0
        total = f["total_ns"] if f else 0
        awaited = f["await_ns"] if f else 0
        rows = {r["line"]: r for r in by_func.get(key, [])}
        out.append(f"\nFunction: {printable(qualname)} at {printable(file)}:{first}")
        summary = f"calls: {calls}, time: {format_ns(total)}"
        if awaited:
            summary += f", await: {format_ns(awaited)}"
        out.append(summary if calls else "calls: 0 (no line ran)")
        source = _source(file, first, set(rows))
        columns = _line_columns(sum(r["time_ns"] for r in rows.values()), memory)
        out.extend(render_lines(columns, [(n, text, rows.get(n)) for n, text in source], "="))
    return "\n".join(out) + "\n"


def _source(file: str, first: int, seen: set[int]) -> list[tuple[int, str]]:
    """(line number, text) of the function starting at ``first``: its block by
    indentation, then every line in ``seen`` past it; placeholders when the file is gone.
    Only lines the file has or the profile names are listed, whatever numbers it holds."""
    lines = linecache.getlines(file)
    if not lines or first > len(lines):
        return [(first, "<source not available>")] + [(n, "") for n in sorted(seen) if n > first]
    try:
        block = inspect.getblock(lines[first - 1:])
    except Exception:  # tokenize errors: fall back to the lines that ran
        block = lines[first - 1:max(seen, default=first)]
    end = min(max(first + len(block) - 1, max(seen, default=first)), len(lines))
    return [(n, lines[n - 1].rstrip("\n")) for n in range(first, end + 1)] + \
        [(n, "") for n in sorted(seen) if n > end]
