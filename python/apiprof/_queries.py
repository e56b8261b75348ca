"""Database statements for the function tracer (``Profiler(queries=True)``, ``apiprof run
--queries``): while a profiler with queries runs, connections that ``sqlite3.connect``
makes (the app's, SQLAlchemy's and SQLModel's sync engines on SQLite) time each
``execute`` / ``executemany`` and hand the statement to ``_core.record_query``, which
normalises it and records it with the route, the request and the app's calling line
(src/ext/queries.c; docs/waits.md, "Queries"). Connections made before the profiler
started are not seen."""

from __future__ import annotations

import sqlite3
import sqlite3.dbapi2
from collections.abc import Callable, Iterable
from typing import Any

from . import _core, _labels

_now = _core.now_ns
_record = _core.record_query
_original: Callable[..., sqlite3.Connection] | None = None
_users = 0


def _done(sql: str, t0: int, cursor: sqlite3.Cursor) -> None:
    """Record a statement that started at t0 (rows: what the driver says, 0 for none)."""
    ns = _now() - t0
    rows = cursor.rowcount
    route = _labels.ROUTE.get(None)
    _record(sql, ns, rows if rows > 0 else 0, _labels.REQUEST.get(),
            route if isinstance(route, str) else None)


class _Cursor(sqlite3.Cursor):
    """A cursor whose statements are timed and recorded."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        t0 = _now()
        try:
            return super().execute(sql, parameters)
        finally:
            _done(sql, t0, self)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> sqlite3.Cursor:
        t0 = _now()
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            _done(sql, t0, self)


class _Connection(sqlite3.Connection):
    """A connection whose cursors are ``_Cursor``s (``Connection.execute`` included)."""

    def cursor(self, factory: Any = _Cursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)


# The tracer names a C method by the type of its object and leaves out apiprof's own
# modules: under sqlite3's names, the driver calls these classes make are recorded (and
# their time classified as database waits) as they are without query capture.
for _cls in (_Cursor, _Connection):
    _cls.__module__ = "sqlite3"
    _cls.__qualname__ = _cls.__name__ = _cls.__name__.lstrip("_")


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    assert _original is not None
    if "factory" not in kwargs and len(args) < 6:  # the caller's own factory is kept
        kwargs["factory"] = _Connection
    return _original(*args, **kwargs)


def install() -> None:
    """Capture from now on (nested: each install() needs its uninstall())."""
    global _original, _users
    _users += 1
    if _users == 1:
        _original = sqlite3.dbapi2.connect
        sqlite3.connect = sqlite3.dbapi2.connect = _connect


def uninstall() -> None:
    global _original, _users
    if _users == 0:
        return
    _users -= 1
    if _users == 0 and _original is not None:
        sqlite3.connect = sqlite3.dbapi2.connect = _original
        _original = None
