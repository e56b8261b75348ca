"""apiprof.Profiler(scope="context"): only the starting context and contexts copied from it."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import apiprof
import pytest


def mine() -> int:
    return 1


def theirs() -> int:
    return 2


def in_thread() -> int:
    return mine()


def calls(p: apiprof.Profiler) -> dict[str, int]:
    return {f["qualname"]: f["calls"] for f in p.functions()}


async def _other(stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        n += theirs()
        await asyncio.sleep(0)
    return n


async def _child() -> None:
    await asyncio.sleep(0)
    mine()


async def _scoped(n: int) -> apiprof.Profiler:
    p = apiprof.Profiler(scope="context").start()
    try:
        for _ in range(n):
            mine()
            await asyncio.sleep(0)
        await asyncio.to_thread(in_thread)  # copies the context into the worker thread
        await asyncio.create_task(_child())  # a child task: its context is a copy too
    finally:
        p.stop()
    return p


def test_context_scope_records_only_its_own_task_and_copies():
    async def main() -> tuple[apiprof.Profiler, list[int]]:
        stop = asyncio.Event()
        others = [asyncio.create_task(_other(stop)) for _ in range(3)]
        await asyncio.sleep(0)
        p = await _scoped(5)
        stop.set()
        return p, await asyncio.gather(*others)

    p, theirs_calls = asyncio.run(main())
    got = calls(p)
    assert all(n > 5 for n in theirs_calls)  # they interleaved with the profiled loop
    assert got["mine"] == 5 + 1 + 1 and got["in_thread"] == 1 and got["_child"] == 1
    assert "theirs" not in got and "_other" not in got
    assert not p.running


def test_context_scope_ignores_threads_that_do_not_copy_the_context():
    p = apiprof.Profiler(scope="context").start()
    try:
        mine()
        t = threading.Thread(target=theirs)  # threading.Thread starts with an empty context
        t.start()
        t.join()
        contextvars.Context().run(theirs)  # a fresh context: not in scope
        contextvars.copy_context().run(mine)  # a copy of this one: in scope
    finally:
        p.stop()
    got = calls(p)
    assert got["mine"] == 2 and "theirs" not in got


def test_context_scope_can_restart_and_stop_elsewhere():
    p = apiprof.Profiler(scope="context")
    with p:
        mine()
    with p:
        mine()
    assert calls(p)["mine"] == 2
    ctx = contextvars.copy_context()
    p.start()
    ctx.run(p.stop)  # stopped in another context: no error, recording stops
    mine()
    assert calls(p)["mine"] == 2 and not p.running


def test_scope_is_checked():
    with pytest.raises(ValueError, match="scope must be 'process' or 'context'"):
        apiprof.Profiler(scope="thread")
    with pytest.raises(TypeError, match="context must be a"):
        apiprof._core.Tracer(context=("not a var", 1))
