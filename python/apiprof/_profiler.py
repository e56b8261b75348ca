"""apiprof.Profiler: the exact, async-aware function tracer (the work is in C: _core.Tracer)."""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

from . import _core, _labels
from ._profile_file import CUT_META, per_process_path, save_profile
from ._table import Column, format_ns, render

F = TypeVar("F", bound=Callable[..., Any])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Marks the contexts a scope="context" profiler records: the var holds that profiler's mark.
_SCOPE: contextvars.ContextVar[object] = contextvars.ContextVar("apiprof_scope")
SCOPES = ("process", "context")
CHECKPOINT_INTERVAL = 10.0  # seconds between checkpoints (Profiler(checkpoint=PATH))

# sort key -> function-table field, largest first (pstats names accepted too)
SORT_KEYS: dict[str, str] = {
    "cumtime": "total_ns", "cumulative": "total_ns", "total": "total_ns",
    "tottime": "self_ns", "time": "self_ns", "self": "self_ns",
    "calls": "calls", "ncalls": "calls", "await": "await_ns",
}


def _patterns(name: str, value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{name} must be module names or paths (non-empty str)")
        if os.sep in item or item.endswith(".py"):
            item = os.path.abspath(item)
        out.append(item)
    return tuple(out)


def location(f: dict[str, Any]) -> str:
    """``file:line(qualname)`` for Python functions, ``{qualname}`` for C ones."""
    if f["kind"] == "python":
        return f"{f['file']}:{f['line']}({f['qualname']})"
    return "{" + f["qualname"] + "}"


def _per_call(key: str, count: str) -> Callable[[dict[str, Any]], str]:
    return lambda f: format_ns(f[key] / f[count]) if f[count] else "-"


# The pstats-like columns (pstats names them so; "await" is apiprof's own).
FUNCTION_COLUMNS: list[Column[dict[str, Any]]] = [
    Column("ncalls", lambda f: f"{f['calls']}/{f['primitive_calls']}"
           if f["calls"] != f["primitive_calls"] else str(f["calls"])),
    Column("tottime", lambda f: format_ns(f["self_ns"])),
    Column("percall", _per_call("self_ns", "calls")),
    Column("cumtime", lambda f: format_ns(f["total_ns"])),
    Column("percall", _per_call("total_ns", "primitive_calls")),
    Column("await", lambda f: format_ns(f["await_ns"]) if f["await_ns"] else "-"),
    Column("function", location, "free"),
]


def format_table(functions: list[dict[str, Any]], sort: str = "cumtime", limit: int | None = 30,
                 header: str = "") -> str:
    """A pstats-like text table of function dicts (Profile.functions())."""
    key = SORT_KEYS.get(sort)
    if key is None:
        raise ValueError(f"sort must be one of {', '.join(sorted(SORT_KEYS))}, not {sort!r}")
    rows = sorted(functions, key=lambda f: (-f[key], -f["total_ns"], location(f)))
    if limit is not None:
        rows = rows[:limit]
    calls = sum(f["calls"] for f in functions)
    prim = sum(f["primitive_calls"] for f in functions)
    lines = [header] if header else []
    lines.append(f"{calls} calls ({prim} primitive) in {len(functions)} functions; "
                 f"sorted by {sort}, top {len(rows)}")
    return "\n".join(lines) + "\n" + render(FUNCTION_COLUMNS, rows)


class Profiler:
    """Exact function profiler: every call of every thread, async-aware.

    ``clock`` is ``"wall"`` (default) or ``"cpu"`` (per-thread CPU time);
    ``builtins`` also records C functions (``time.sleep``, ``list.sort``...);
    ``include`` / ``exclude`` are module names (``"shop"`` matches ``shop`` and
    ``shop.db``) or path prefixes (containing ``/``), decided once per code object.
    ``scope="process"`` (default) records every thread; ``scope="context"`` records
    only the contextvars context that ``start()`` runs in and contexts copied from it
    while it runs (asyncio tasks it creates, ``asyncio.to_thread`` / anyio thread-pool
    calls), so one request's work is profiled while others run beside it.
    ``labels=True`` records request work into trees labelled ``route=METHOD template``
    (set by apiprof.asgi / ``apiprof run`` for ASGI apps, see apiprof._labels) and the
    work of named asyncio tasks into trees labelled ``task=NAME``; ``timeline=N`` also
    keeps the last N frame spans for ``apiprof report --format chrome`` (wall clock).
    ``checkpoint=PATH`` saves the profile to PATH every ``checkpoint_interval`` seconds
    while it runs (atomically, see ``save``), so a run killed by SIGKILL keeps its work
    up to the last checkpoint; such a file says it was cut (metadata ``cut``) until the
    final ``save``. In a child forked while it runs, checkpoints go to
    ``PATH``'s per-process name (``name.<pid>.apiprof``).
    Use ``start()``/``stop()``, ``with Profiler() as p:``, or ``@Profiler()``.
    """

    def __init__(self, clock: str = "wall", builtins: bool = True,
                 include: str | Iterable[str] | None = None,
                 exclude: str | Iterable[str] | None = None,
                 scope: str = "process", labels: bool = False, timeline: int = 0,
                 checkpoint: str | os.PathLike[str] | None = None,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL) -> None:
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be 'process' or 'context', not {scope!r}")
        if not isinstance(timeline, int) or timeline < 0:
            raise ValueError(f"timeline must be a number of events (0: off), not {timeline!r}")
        if timeline and clock != "wall":
            raise ValueError("a timeline needs clock='wall'")
        if not isinstance(checkpoint_interval, (int, float)) or not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be seconds > 0, not "
                             f"{checkpoint_interval!r}")
        self._checkpoint = _Checkpoints(self, os.path.abspath(checkpoint),
                                        float(checkpoint_interval)) if checkpoint else None
        self.clock = clock
        self.scope = scope
        self.labels = bool(labels)
        self._mark = object()
        self._scope_reset: contextvars.Token[object] | None = None
        self._tracer = _core.Tracer(
            clock=clock, builtins=bool(builtins),
            include=_patterns("include", include),
            exclude=(*_patterns("exclude", exclude), _PACKAGE_DIR, "apiprof"),
            threads=threading._active,  # type: ignore[attr-defined]
            context=(_SCOPE, self._mark) if scope == "context" else None,
            labels=(_labels.ROUTE, _labels.PAUSED) if labels else None,
            tasks=bool(labels), timeline=timeline,
        )
        self._depth = 0

    @property
    def running(self) -> bool:
        return bool(self._tracer.running)

    def start(self) -> Profiler:
        """Start recording in every thread (threads started later included); with
        scope="context", only in the current context and contexts copied from it."""
        if self.scope != "context":
            self._tracer.start()
            self._count_labels(1)
            self._start_checkpoints()
            return self
        reset = _SCOPE.set(self._mark)
        try:
            self._tracer.start()
        except BaseException:
            _SCOPE.reset(reset)
            raise
        self._scope_reset = reset
        self._count_labels(1)
        self._start_checkpoints()
        return self

    def _start_checkpoints(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint.start()

    def _count_labels(self, step: int) -> None:
        if self.labels:
            _labels.active += step

    def stop(self) -> Profiler:
        """Stop recording; frames still open are closed now. Idempotent."""
        if self._checkpoint is not None:
            self._checkpoint.stop()
            profile = self.profile
            if profile.meta.get(CUT_META):  # the run ended: the profile is whole again
                profile.set_meta(CUT_META, "")
        if self.running:
            self._count_labels(-1)
        self._tracer.stop()
        reset, self._scope_reset = self._scope_reset, None
        if reset is not None:
            try:
                _SCOPE.reset(reset)
            except ValueError:  # stopped in another context: the mark stays there, unused
                pass
        return self

    @property
    def phase(self) -> str | None:
        """The label ``phase`` of the trees being recorded now, or None."""
        phase: str | None = self._tracer.phase
        return phase

    def set_phase(self, name: str) -> None:
        """From now on, record into trees labelled ``phase=name``, in every thread.

        Calls belong to the phase they start in; frames open at the switch go on
        in the new phase under the same call path, their time split at the switch
        (in CPU-clock mode, only the calling thread's: other threads' open frames
        carry their time into the new phase). ``Profile.select({"phase": name})``
        and ``apiprof report --phase NAME`` read one phase back."""
        self._tracer.set_phase(name)

    def __enter__(self) -> Profiler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, func: F) -> F:
        """Decorator: profile every call of ``func`` (sync or async) into this profiler."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                if not self._enter():
                    return await func(*args, **kwargs)
                try:
                    return await func(*args, **kwargs)
                finally:
                    self._leave()

            return awrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self._enter():
                return func(*args, **kwargs)
            try:
                return func(*args, **kwargs)
            finally:
                self._leave()

        return wrapper  # type: ignore[return-value]

    def _enter(self) -> bool:
        """Start unless already running; True if this call owns the run."""
        self._depth += 1
        if self._depth == 1 and not self.running:
            self.start()
            return True
        self._depth -= 1
        return False

    def _leave(self) -> None:
        self._depth -= 1
        self.stop()

    @property
    def profile(self) -> Any:
        """The recorded apiprof._core.Profile (live: reflects later runs too)."""
        return self._tracer.profile()

    def functions(self) -> list[dict[str, Any]]:
        """The function table, one dict per function, by cumulative time: name,
        qualname, file, line, kind, calls, primitive_calls, self_ns, total_ns,
        await_ns, callers and callees (lists of dicts whose ``function`` is an
        index into this list)."""
        return list(self.profile.functions())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the native file (``apiprof report FILE`` reads it): a regular file is
        replaced atomically (a new file renamed over it), a FIFO or device written
        through. The profile no longer says it was cut by a checkpoint."""
        profile = self.profile
        if profile.meta.get(CUT_META):
            profile.set_meta(CUT_META, "")
        save_profile(profile, os.fspath(path))

    def checkpoint_now(self) -> None:
        """Save the running profile to the ``checkpoint`` path, marked as cut now
        (what the checkpoint thread does every interval). OSError on failure."""
        if self._checkpoint is None:
            raise ValueError("this Profiler has no checkpoint path")
        self._checkpoint.save()

    def print(self, sort: str = "cumtime", limit: int | None = 30,
              file: IO[str] | None = None) -> None:
        """Print a pstats-like table of the top ``limit`` functions by ``sort``
        (cumtime, tottime, calls, await)."""
        out = file if file is not None else sys.stdout
        out.write(format_table(self.functions(), sort, limit))


# Profilers whose checkpoint thread runs: a forked child restarts theirs (threads do not
# survive fork) on the child's own file.
_CHECKPOINTING: weakref.WeakSet[_Checkpoints] = weakref.WeakSet()


class _Checkpoints:
    """The checkpoint thread of one Profiler: every ``interval`` seconds while it runs,
    the profile is saved to ``path`` with metadata ``cut`` saying when and what it lacks.
    Each save holds the GIL for as long as the profile takes to write (bench/RESULTS.md);
    a failing save is reported once on stderr and retried at the next interval."""

    def __init__(self, profiler: Profiler, path: str, interval: float) -> None:
        self._profiler = weakref.ref(profiler)
        self._base = path
        self.path = path
        self.interval = interval
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failed = False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._wake.clear()
        self._thread = threading.Thread(target=self._loop, name="apiprof-checkpoint",
                                        daemon=True)
        self._thread.start()
        _CHECKPOINTING.add(self)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        _CHECKPOINTING.discard(self)
        if thread is None:
            return
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        # A labelling profiler records nothing of this thread: its context is paused.
        _core.label_set(_labels.ROUTE, _labels.PAUSED)
        wake = self._wake
        while not wake.wait(self.interval):
            try:
                self.save()
            except OSError as e:
                if not self._failed:
                    self._failed = True
                    print(f"apiprof: cannot write checkpoint {self.path}: {e}", file=sys.stderr)

    def save(self) -> None:
        profiler = self._profiler()
        if profiler is None:
            return
        with self._lock:
            profile = profiler.profile
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
            profile.set_meta(CUT_META, f"checkpoint of a run that had not ended, written at "
                                       f"{stamp}: it lacks the work after that and the calls "
                                       f"still open then")
            save_profile(profile, self.path)

    def after_fork_in_child(self) -> None:
        self._thread = None
        self._lock = threading.Lock()
        self._failed = False
        self.path = per_process_path(self._base, os.getpid())
        self.start()


def _restart_checkpoints_in_child() -> None:
    for checkpoints in list(_CHECKPOINTING):
        checkpoints.after_fork_in_child()


os.register_at_fork(after_in_child=_restart_checkpoints_in_child)
