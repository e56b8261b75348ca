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

from . import _core, _labels, _queries
from ._profile_file import CUT_META, per_process_path, save_profile
from ._table import Column, format_ns, render

F = TypeVar("F", bound=Callable[..., Any])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Marks the contexts a scope="context" profiler records: the var holds that profiler's mark.
_SCOPE: contextvars.ContextVar[object] = contextvars.ContextVar("apiprof_scope")
SCOPES = ("process", "context")
CHECKPOINT_INTERVAL = 10.0  # seconds between checkpoints (Profiler(checkpoint=PATH))
MEMORY_MODES = ("full", "sampled")
MEMORY_RATE = 512 * 1024  # sampled memory: mean bytes between samples
MEMORY_INTERVAL = 0.1  # seconds between points of memory over time (RSS, traced heap)
STALL_THRESHOLD = 0.05  # seconds: an event-loop step this long is a stall

# The metric catalogue (C's ap_metric table): name, unit, label, how it sums, its views.
CATALOGUE: list[dict[str, Any]] = _core.metrics()

# Metrics the pstats columns already show (or that belong to line tables).
_PSTATS_METRICS = ("calls", "primitive_calls", "self_ns", "total_ns", "hits")

# Table metrics of the catalogue beyond the pstats ones: a function table shows each
# that the profile has, titled by its label.
EXTRA_METRICS: list[dict[str, Any]] = [
    m for m in CATALOGUE if m["table"] and m["name"] not in _PSTATS_METRICS]

# sort key -> function-table field, largest first (pstats names accepted too), and
# every further table metric by its label ("cpu", "cpu total", "alloc"...) and name.
SORT_KEYS: dict[str, str] = {
    "cumtime": "total_ns", "cumulative": "total_ns", "total": "total_ns",
    "tottime": "self_ns", "time": "self_ns", "self": "self_ns",
    "calls": "calls", "ncalls": "calls",
    **{m["label"].replace(" ", "-"): m["name"] for m in EXTRA_METRICS},
    **{m["name"]: m["name"] for m in EXTRA_METRICS},
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


def _per_call(key: str, count: str,
              value: Callable[[float], str]) -> Callable[[dict[str, Any]], str]:
    return lambda f: value(f[key] / f[count]) if f[count] else "-"


def pstats_columns(value: Callable[[float], str]) -> list[Column[dict[str, Any]]]:
    """The pstats-like columns (pstats names them so); ``value`` writes the self and total
    figures (durations, or another metric's unit)."""
    return [
        Column("ncalls", lambda f: f"{f['calls']}/{f['primitive_calls']}"
               if f["calls"] != f["primitive_calls"] else str(f["calls"])),
        Column("tottime", lambda f: value(f["self_ns"])),
        Column("percall", _per_call("self_ns", "calls", value)),
        Column("cumtime", lambda f: value(f["total_ns"])),
        Column("percall", _per_call("total_ns", "primitive_calls", value)),
    ]


def function_columns(functions: list[dict[str, Any]],
                     value: Callable[[float], str] = format_ns) -> list[Column[dict[str, Any]]]:
    """The pstats columns, one column per further catalogue metric the rows have (a key
    every row carries, as ``await_ns``, or a value that is not 0 somewhere), and the
    function's location."""
    extra = [Column.metric(m, blank_zero=True) for m in EXTRA_METRICS
             if functions and (all(m["name"] in f for f in functions)
                               or any(f.get(m["name"]) for f in functions))]
    return [*pstats_columns(value), *extra, Column("function", location, "free")]


def format_table(functions: list[dict[str, Any]], sort: str = "cumtime", limit: int | None = 30,
                 header: str = "", everything: bool = True,
                 value: Callable[[float], str] = format_ns) -> str:
    """A pstats-like text table of function dicts (Profile.functions()); ``value`` writes
    self and total (a profile projected on another metric: its unit). With
    ``everything=False`` only the app's own functions (class "user": not library code, not
    idle waiting; src/core/ap_findings.h) are listed, and a line says how many are not."""
    hidden = 0
    if not everything:
        shown = [f for f in functions if f.get("class", "user") == "user"]
        hidden = len(functions) - len(shown)
        functions = shown
    key = SORT_KEYS.get(sort)
    if key is None:
        raise ValueError(f"sort must be one of {', '.join(sorted(SORT_KEYS))}, not {sort!r}")
    rows = sorted(functions, key=lambda f: (-f.get(key, 0), -f["total_ns"], location(f)))
    if limit is not None:
        rows = rows[:limit]
    calls = sum(f["calls"] for f in functions)
    prim = sum(f["primitive_calls"] for f in functions)
    lines = [header] if header else []
    columns = function_columns(functions, value)
    if calls or not functions:
        lines.append(f"{calls} calls ({prim} primitive) in {len(functions)} functions; "
                     f"sorted by {sort}, top {len(rows)}")
    else:  # no calls were traced (apiprof run --no-calls): no call counts to show
        lines.append(f"{len(functions)} functions (calls not traced); sorted by {sort}, "
                     f"top {len(rows)}")
        columns = [c for c in columns if c.title not in ("ncalls", "percall")]
    if hidden:
        lines.append(f"({hidden} library and idle-waiting functions not listed; --all lists them)")
    return "\n".join(lines) + "\n" + render(columns, rows)


def clock_note(meta: dict[str, str]) -> str:
    """For a profile timed with the CPU clock, the line saying what that clock counts and
    the process's CPU time beside it (metadata process_cpu_ns); "" for the wall clock."""
    if meta.get("clock") != "cpu":
        return ""
    note = ("note: cpu is the CPU time of each Python thread the tracer saw; work in threads "
            "it does not see (native threads of a C extension, such as a hash computed in a "
            "library's own threads) is not in the table")
    process = meta.get("process_cpu_ns", "")
    if process.isdigit():
        note += f"; the whole process used {format_ns(int(process))} of CPU"
        started, stopped = meta.get("started", ""), meta.get("stopped", "")
        if started.isdigit() and stopped.isdigit() and int(stopped) >= int(started):
            note += f" in {format_ns(int(stopped) - int(started))} of wall time"
    return note + "\n"


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
    ``cpu=True`` (wall clock) also records each frame's thread CPU time beside its wall
    time: ``cpu_ns`` (self) and ``cpu_total_ns`` (with callees), so that waiting and
    computing show apart; it reads the thread CPU clock at every call and return.
    ``queries=True`` also records each database statement that connections made by
    ``sqlite3.connect`` run while it runs (the app's, and SQLAlchemy's / SQLModel's on
    SQLite), those of psycopg 3 and asyncpg (directly or under SQLAlchemy), and each
    outgoing HTTP call of httpx, requests and aiohttp: normalised text (a call: method,
    host, path template, status), count, time, rows, route, the app's calling line and
    the most runs in one request (``Profile.queries()``; docs/waits.md, "Queries").
    ``stall_threshold`` (seconds, default 0.05; ``None`` or 0: off; wall clock only)
    records every step of an event loop (a callback, or a task's run up to its next
    await) that takes at least that long as a stall: its start, duration, route, task
    and the line where the time went (the JSON export's ``"stalls"``, the
    ``loop_stall`` finding).
    ``locks=True`` (wall clock) times lock waits: while it runs, ``threading.Lock``
    makes locks (``_core.TimedLock``) whose contended acquisitions (``with lock:``,
    ``lock.acquire()``, a ``Condition`` on such a lock) are recorded as calls of a
    ``<lock wait>`` frame at the acquiring line, under the acquiring function (whose
    self time then leaves the wait out), and as ``wait_lock_ns`` of every frame open
    then. Locks made before ``start()`` are not timed.
    ``checkpoint=PATH`` saves the profile to PATH every ``checkpoint_interval`` seconds
    while it runs (atomically, see ``save``), so a run killed by SIGKILL keeps its work
    up to the last checkpoint; such a file says it was cut (metadata ``cut``) until the
    final ``save``. In a child forked while it runs, checkpoints go to
    ``PATH``'s per-process name (``name.<pid>.apiprof``).
    ``memory="full"`` also records every allocation of the PyMem domains (RAW, MEM, OBJ)
    and every free, charged to the running function and its line: ``alloc_bytes``,
    ``alloc_count``, ``live_bytes`` (allocated while it ran and still alive when it
    stopped) and ``peak_bytes``; ``memory="sampled"`` records a byte-sampled subset (one
    sample every ``memory_rate`` bytes on average, default 512 KiB) weighted so that the
    same figures are unbiased estimates; ``memory_seed`` fixes the sampling sequence
    (docs/memory.md).
    ``calls=False`` (with ``memory``) traces no calls: nothing is timed, and each
    allocation the memory hook tracks (every one in full mode, the sampled ones in
    sampled mode) is charged to the call path read from the thread's running frames at
    that moment, so a sampled memory profile costs little more than the hook itself
    (route labels still apply; C functions are part of the line that called them).
    ``memory_interval`` (seconds; default: 0.1 with ``memory``, else off; 0 or None: off)
    samples the process's RSS and, with ``memory``, the traced heap (live bytes) that
    often from a C thread into the profile: memory over time (the JSON export's
    ``"memory_timeline"``, a chart in the HTML report), each point labelled with the
    phase it was taken in.
    Use ``start()``/``stop()``, ``with Profiler() as p:``, or ``@Profiler()``.
    """

    def __init__(self, clock: str = "wall", builtins: bool = True,
                 include: str | Iterable[str] | None = None,
                 exclude: str | Iterable[str] | None = None,
                 scope: str = "process", labels: bool = False, timeline: int = 0,
                 cpu: bool = False, queries: bool = False,
                 stall_threshold: float | None = STALL_THRESHOLD, locks: bool = False,
                 checkpoint: str | os.PathLike[str] | None = None,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL,
                 memory: str | None = None, memory_rate: int = MEMORY_RATE,
                 memory_seed: int = 0, memory_interval: float | None = None,
                 calls: bool = True) -> None:
        if not calls:
            if memory is None:
                raise ValueError("calls=False records nothing without memory")
            asked = [name for name, on in (("clock='cpu'", clock != "wall"),
                                           ("scope='context'", scope != "process"),
                                           ("timeline", timeline), ("cpu", cpu),
                                           ("queries", queries)) if on]
            if asked:
                raise ValueError(f"calls=False traces no calls: {', '.join(asked)} need them")
            stall_threshold, locks = None, False
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be 'process' or 'context', not {scope!r}")
        if not isinstance(timeline, int) or timeline < 0:
            raise ValueError(f"timeline must be a number of events (0: off), not {timeline!r}")
        if timeline and clock != "wall":
            raise ValueError("a timeline needs clock='wall'")
        if cpu and clock != "wall":
            raise ValueError(
                "cpu=True needs clock='wall' (with clock='cpu' every time is CPU time)")
        if stall_threshold is not None and (
                not isinstance(stall_threshold, (int, float)) or not stall_threshold >= 0):
            raise ValueError(f"stall_threshold must be seconds >= 0 or None, not "
                             f"{stall_threshold!r}")
        if not isinstance(checkpoint_interval, (int, float)) or not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be seconds > 0, not "
                             f"{checkpoint_interval!r}")
        self._checkpoint = _Checkpoints(self, os.path.abspath(checkpoint),
                                        float(checkpoint_interval)) if checkpoint else None
        self.clock = clock
        self.scope = scope
        self.labels = bool(labels)
        self.queries = bool(queries)
        self._mark = object()
        self._scope_reset: contextvars.Token[object] | None = None
        self._tracer = _core.Tracer(
            clock=clock, builtins=bool(builtins),
            include=_patterns("include", include),
            exclude=(*_patterns("exclude", exclude), _PACKAGE_DIR, "apiprof"),
            threads=threading._active,  # type: ignore[attr-defined]
            context=(_SCOPE, self._mark) if scope == "context" else None,
            labels=(_labels.ROUTE, _labels.PAUSED) if labels else None,
            tasks=bool(labels) and bool(calls), timeline=timeline, cpu=bool(cpu),
            stalls=round(stall_threshold * 1e9) if stall_threshold and clock == "wall" else 0,
            calls=bool(calls),
        )
        self.calls = bool(calls)
        self._memory: Any = None
        if memory is not None:
            if memory not in MEMORY_MODES:
                raise ValueError(f"memory must be 'full', 'sampled' or None, not {memory!r}")
            if not isinstance(memory_rate, int) or not 1 <= memory_rate <= 1 << 40:
                raise ValueError(f"memory_rate must be bytes (1 to 2**40), not {memory_rate!r}")
            self._memory = _core.MemoryTracker(self._tracer, mode=memory, rate=memory_rate,
                                               seed=memory_seed)
        self.memory = memory
        if memory_interval is None:
            memory_interval = MEMORY_INTERVAL if memory is not None else 0
        if not isinstance(memory_interval, (int, float)) or not (
                memory_interval == 0 or 0.001 <= memory_interval <= 3600):
            raise ValueError(f"memory_interval must be seconds from 0.001 to 3600 (0: off), "
                             f"not {memory_interval!r}")
        self._timeline: Any = _core.MemoryTimeline(
            self._tracer, interval_ns=round(memory_interval * 1e9)) if memory_interval else None
        self._depth = 0
        self.locks = bool(locks) and clock == "wall"
        self._saved_lock: Any = None

    @property
    def running(self) -> bool:
        return bool(self._tracer.running)

    def start(self) -> Profiler:
        """Start recording in every thread (threads started later included); with
        scope="context", only in the current context and contexts copied from it."""
        if self.scope != "context":
            self._tracer.start()
            self._start_memory()
            self._time_locks()
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
        self._start_memory()
        self._time_locks()
        self._count_labels(1)
        self._start_checkpoints()
        return self

    def _start_memory(self) -> None:
        try:
            if self._memory is not None:
                self._memory.start()
            if self._timeline is not None:
                self._timeline.phase(self._tracer.phase)
                self._timeline.start()
                _TIMELINES.add(self._timeline)
        except BaseException:
            if self._memory is not None:
                self._memory.stop()
            self._tracer.stop()
            raise

    def memory_snapshot(self) -> dict[str, int] | None:
        """With ``memory``: the traced live bytes now, their peak since start and the live
        blocks tracked (estimates when sampled); else None."""
        return None if self._memory is None else dict(self._memory.snapshot())
    def _time_locks(self) -> None:
        if self.locks and self._saved_lock is None:
            self._saved_lock = (threading.Lock, threading.RLock)
            threading.Lock = _core.TimedLock  # type: ignore[misc]
            threading.RLock = _core.TimedRLock  # type: ignore[misc,assignment]

    def _untime_locks(self) -> None:
        if self._saved_lock is not None:
            threading.Lock, threading.RLock = self._saved_lock  # type: ignore[misc]
            self._saved_lock = None

    def _start_checkpoints(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint.start()

    def _count_labels(self, step: int) -> None:
        if self.labels:
            _labels.active += step
        if self.queries and step > 0:
            _queries.install((_SCOPE, self._mark) if self.scope == "context" else None)
        elif self.queries:
            _queries.uninstall()

    def stop(self) -> Profiler:
        """Stop recording; frames still open are closed now. Idempotent."""
        if self._checkpoint is not None:
            self._checkpoint.stop()
            profile = self.profile
            if profile.meta.get(CUT_META):  # the run ended: the profile is whole again
                profile.set_meta(CUT_META, "")
        if self.running:
            self._count_labels(-1)
        if self._timeline is not None:
            _TIMELINES.discard(self._timeline)
            self._timeline.stop()
        if self._memory is not None:
            self._memory.stop()
        self._untime_locks()
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
        if self._timeline is not None:
            self._timeline.phase(name)

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
        if self._timeline is not None and self._timeline.running:
            self._timeline.flush()  # memory over time up to now
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
        # apiprof's own thread: no profiler records it (its bootstrap frames, opened
        # before this line, are forgotten), and a labelling profiler's context is paused.
        _core.untrace_thread()
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


# Running memory timelines: a forked child starts their sampling threads again.
_TIMELINES: set[Any] = set()


def _restart_checkpoints_in_child() -> None:
    for timeline in list(_TIMELINES):
        timeline.after_fork()
    for checkpoints in list(_CHECKPOINTING):
        checkpoints.after_fork_in_child()


os.register_at_fork(after_in_child=_restart_checkpoints_in_child)
