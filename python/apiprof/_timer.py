"""apiprof.timer: named block timers (wall and thread-CPU ns) aggregated in C.

``apiprof.timer`` is the C type ``apiprof._core.Timer``; this module adds what is
Python: the decorator wrappers, ``async with``, ``report()`` and ``stats()``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Iterator
from typing import Any

from . import _core
from ._table import Column, format_ns, render

timer = _core.Timer


class _Stepped:
    """Awaits a coroutine step by step, so that the timer's CPU time counts only
    the coroutine's own steps and not what other tasks ran while it awaited."""

    __slots__ = ("_timer", "_coro")

    def __init__(self, t: Any, coro: Any) -> None:
        self._timer = t
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        t, coro = self._timer, self._coro
        t._start_stepped()
        error = True
        try:
            value: Any = None
            exc: BaseException | None = None
            while True:
                t._step_in()
                try:
                    yielded = coro.send(value) if exc is None else coro.throw(exc)
                except StopIteration as stop:
                    error = False
                    return stop.value
                finally:
                    t._step_out()
                value, exc = None, None
                try:
                    value = yield yielded
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as e:  # delivered into the coroutine
                    exc = e
        finally:
            t.stop(error)


def _decorate(name: str | None, func: Callable[..., Any], cpu: bool) -> Callable[..., Any]:
    if name is None:
        name = getattr(func, "__qualname__", None) or repr(func)
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"apiprof.timer cannot decorate the generator function {name!r}: "
            "time its body with `with apiprof.timer(...)` instead"
        )
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            return await _Stepped(timer(name, cpu=cpu), func(*args, **kwargs))

        return awrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with timer(name, cpu=cpu):
            return func(*args, **kwargs)

    return wrapper


async def _aenter(self: Any) -> Any:
    return self.__enter__()


async def _aexit(self: Any, et: Any, ev: Any, tb: Any) -> bool:
    return bool(self.__exit__(et, ev, tb))


def stats() -> dict[str, Any]:
    """Everything recorded, JSON-able: ``{"clock", "unit", "timers": [tree]}``.

    Each timer: name, path (names from the root), count, errors, total_ns,
    mean_ns, min_ns, p50_ns, p90_ns, p95_ns, p99_ns, max_ns, cpu_ns, cpu_max_ns,
    off_cpu_ns (wall minus CPU: awaiting, blocked or waiting for the CPU) and
    children (timers started while this one ran, in the same thread or task).
    """
    return {"clock": _core.clock_source(), "unit": "ns", "timers": timer.snapshot()}


_Row = tuple[int, dict[str, Any]]  # (depth, timer)


def _ns(key: str) -> Callable[[_Row], str]:
    return lambda r: format_ns(r[1][key])


def _off_cpu(r: _Row) -> str:
    total = r[1]["total_ns"]
    return f"{100.0 * r[1]['off_cpu_ns'] / total:.0f}%" if total else "-"


_COLUMNS: list[Column[_Row]] = [
    Column("timer", lambda r: "  " * r[0] + r[1]["name"], "left"),
    Column("count", lambda r: str(r[1]["count"])),
    Column("errors", lambda r: str(r[1]["errors"])),
    *(Column(key, _ns(f"{key}_ns")) for key in ("total", "mean", "p50", "p95", "p99", "max",
                                                "cpu")),
    Column("off-cpu", _off_cpu),
]


def _walk(nodes: list[dict[str, Any]], depth: int = 0) -> Iterator[_Row]:
    """(depth, timer) of every timer, children under parents, siblings by total time."""
    for n in sorted(nodes, key=lambda n: -n["total_ns"]):
        yield depth, n
        yield from _walk(n["children"], depth + 1)


def report() -> str:
    """An aligned text table of every timer, children indented under parents,
    siblings by total time; empty registry gives a one-line note."""
    rows = list(_walk(timer.snapshot()))
    if not rows:
        return "apiprof.timer: no timed blocks recorded\n"
    return render(_COLUMNS, rows)


timer._set_decorator(_decorate)
timer.__aenter__ = _aenter
timer.__aexit__ = _aexit
timer.report = staticmethod(report)
timer.stats = staticmethod(stats)
