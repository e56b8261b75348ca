"""Database statements for the function tracer (``Profiler(queries=True)``, ``apiprof run
--queries``): while a profiler with queries runs, connections that ``sqlite3.connect``
makes (the app's, SQLAlchemy's and SQLModel's sync engines on SQLite) time each
``execute`` / ``executemany``, and so do the statement methods of psycopg 3's cursors
(sync and async) and asyncpg's connections and prepared statements (used directly or by
SQLAlchemy's engines on them), and the send methods of the HTTP clients httpx, requests
and aiohttp (outgoing calls, records of kind http); each goes to
``_core.record_query``, which normalises a statement and records it with the route, the
request and the app's calling line (src/ext/queries.c; docs/waits.md, "Queries").
aiosqlite's worker thread runs each statement in a copy of its caller's context (the
async engines of SQLAlchemy and SQLModel on SQLite).
sqlite3 connections made before the profiler started are not seen; the drivers and
clients are timed from their import on (or from the start, when already imported)."""

from __future__ import annotations

import contextvars
import importlib.abc
import importlib.machinery
import re
import sqlite3
import sqlite3.dbapi2
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from . import _core, _labels

_now = _core.now_ns
_record = _core.record_query
_original: Callable[..., sqlite3.Connection] | None = None
_users = 0
# Records go under the request and route of the current context (_labels); a profiler
# with scope="context" (the middleware's per-request profiles) limits them to the contexts
# of its scope, all as one request (_core.query_scope).
# A statement another thread runs for the caller (aiosqlite's worker) is charged to the
# caller's line, which this variable carries in the copied context (_core.query_site()).
_SITE: contextvars.ContextVar[object] = contextvars.ContextVar("apiprof_query_site")
_core.query_context(_labels.REQUEST, _labels.ROUTE, _SITE)

# sqlite3: subclasses of its Connection and Cursor, made in C under sqlite3's names, whose
# statement methods time and record each statement with no Python frame of their own (so
# the tracer records the driver calls, and their database waits, as without capture).
_Connection, _Cursor = _core.sqlite_types(sqlite3.Connection, sqlite3.Cursor)


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    assert _original is not None
    if "factory" not in kwargs and len(args) < 6:  # the caller's own factory is kept
        kwargs["factory"] = _Connection
    return _original(*args, **kwargs)


# ---- psycopg 3 and asyncpg: their statement methods, timed in place ----------------------
# Their classes are Python classes: while capture is on, the methods below are replaced
# on the class by a timed wrapper (apiprof's own frame, which the tracer leaves out, so
# the driver's frames and their database waits are recorded as without capture).

STATEMENT, HTTP = 0, 1   # record kinds (ap_prof.h, AP_QUERY_*)


def _put(statement: object, t0: int, rows: int, kind: int = STATEMENT) -> None:
    """Record statement (str or bytes; anything else is not a statement we can name)."""
    if isinstance(statement, bytes):
        statement = statement.decode("utf-8", "replace")
    if isinstance(statement, str):
        _record(statement, _now() - t0, rows if rows > 0 else 0, kind)


def _psycopg_text(cur: Any, args: Sequence[Any], _out: object) -> object:
    query = args[0] if args else None
    if query is not None and not isinstance(query, (str, bytes)):
        try:  # psycopg.sql.Composable
            return query.as_string(cur)
        except Exception:  # noqa: BLE001 -- the app's statement runs whatever we make of it
            return None
    return query


def _psycopg_rows(cur: Any, _out: object) -> int:
    rows = getattr(cur, "rowcount", -1)
    return rows if isinstance(rows, int) else 0


def _asyncpg_text(_conn: Any, args: Sequence[Any], _out: object) -> object:
    return args[0] if args else None


def _prepared_text(stmt: Any, _args: Sequence[Any], _out: object) -> object:
    return stmt.get_query()


def _asyncpg_rows(_self: Any, out: object) -> int:
    return len(out) if isinstance(out, list) else 0


Text = Callable[[Any, Sequence[Any], object], object]   # (self, args, result) -> the record's text
Rows = Callable[[Any, object], int]


def _timed(fn: Callable[..., Any], text: Text, rows: Rows | None,
           kind: int = STATEMENT) -> Callable[..., Any]:
    """fn timed and recorded: a statement (rows from ``rows``) or an HTTP call."""
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = _now()
        out = None
        try:
            out = fn(self, *args, **kwargs)
            return out
        finally:
            _put(text(self, args, out), t0, rows(self, out) if rows else 0, kind)
    return timed


def _timed_async(fn: Callable[..., Any], text: Text, rows: Rows | None,
                 kind: int = STATEMENT) -> Callable[..., Any]:
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = _now()
        out = None
        try:
            out = await fn(self, *args, **kwargs)
            return out
        finally:
            _put(text(self, args, out), t0, rows(self, out) if rows else 0, kind)
    return timed


# ---- outgoing HTTP calls: httpx, requests, aiohttp -------------------------------------
# Each call is recorded as "METHOD host[:port]/path status": the path as a template (a
# segment of digits or a long hex / UUID value is "{id}"), never the query string or
# the user info, so no token or secret of a URL lands in a label.

_ID = re.compile(r"\d+|[0-9a-fA-F-]{16,}|[0-9a-fA-F]{8}-[0-9a-fA-F-]+")


def http_label(method: object, url: object, status: object) -> str:
    """The record's text for a call of method to url that got status (None: it failed)."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        path = "/".join("{id}" if _ID.fullmatch(seg) else seg
                        for seg in (parts.path or "/").split("/"))
    except ValueError:
        host, path = "?", "/"
    return f"{str(method).upper()} {host}{path} {status if status is not None else 'error'}"


def _send_label(_client: Any, args: Sequence[Any], out: object) -> str:
    """httpx's and requests' ``send(request)``: the request's method and URL."""
    request = args[0] if args else None
    return http_label(getattr(request, "method", "?"), getattr(request, "url", ""),
                      getattr(out, "status_code", None))


def _aiohttp_label(_session: Any, args: Sequence[Any], out: object) -> str:
    return http_label(args[0] if args else "?", args[1] if len(args) > 1 else "",
                      getattr(out, "status", None))


def _http_call(fn: Callable[..., Any], label: Text, _rows: Any = None) -> Callable[..., Any]:
    return _timed(fn, label, None, HTTP)


def _http_call_async(fn: Callable[..., Any], label: Text, _rows: Any = None) -> Callable[..., Any]:
    return _timed_async(fn, label, None, HTTP)


# ---- aiosqlite: sqlite3 on a worker thread of the connection's own ------------------------
# Its Connection._execute(fn, *args) queues fn for the worker, which runs it outside the
# request's context: it runs instead in a copy of the caller's context, holding the
# caller's line, so the statement (timed by sqlite3's timed classes above) keeps its
# request, route and line.


def _in_callers_context(fn: Callable[..., Any], _text: Any = None,
                        _rows: Any = None) -> Callable[..., Any]:
    async def _execute(self: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        context = contextvars.copy_context()
        context.run(_SITE.set, _core.query_site())
        return await fn(self, context.run, func, *args, **kwargs)
    return _execute


# module -> [(class path in the module, methods, wrapper, text, rows)]
_DRIVERS: dict[str, list[tuple[str, tuple[str, ...], Callable[..., Any], Any, Any]]] = {
    "psycopg": [
        ("Cursor", ("execute", "executemany"), _timed, _psycopg_text, _psycopg_rows),
        ("AsyncCursor", ("execute", "executemany"), _timed_async, _psycopg_text,
         _psycopg_rows),
    ],
    "asyncpg": [
        ("Connection", ("execute", "executemany", "fetch", "fetchrow", "fetchval",
                        "fetchmany"), _timed_async, _asyncpg_text, _asyncpg_rows),
        ("prepared_stmt.PreparedStatement", ("executemany", "fetch", "fetchrow", "fetchval",
                                             "fetchmany"), _timed_async, _prepared_text,
         _asyncpg_rows),
    ],
    "httpx": [
        ("Client", ("send",), _http_call, _send_label, None),
        ("AsyncClient", ("send",), _http_call_async, _send_label, None),
    ],
    "requests": [("Session", ("send",), _http_call, _send_label, None)],
    "aiohttp": [("ClientSession", ("_request",), _http_call_async, _aiohttp_label, None)],
    "aiosqlite": [("core.Connection", ("_execute",), _in_callers_context, None, None)],
}
_patched: list[tuple[type, str, Any]] = []   # (class, method, the original), to put back


def _patch(name: str, module: ModuleType) -> None:
    for path, methods, wrap, text, rows in _DRIVERS[name]:
        owner: Any = module
        for part in path.split("."):
            owner = getattr(owner, part, None)
        if not isinstance(owner, type):
            continue
        for method in methods:
            original = owner.__dict__.get(method)
            if callable(original):
                _patched.append((owner, method, original))
                setattr(owner, method, wrap(original, text, rows))


class _Loader(importlib.abc.Loader):
    """The driver's own loader, then its classes patched."""

    def __init__(self, name: str, loader: Any) -> None:
        self.name, self.loader = name, loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        if _users and _finder in sys.meta_path:
            _patch(self.name, module)


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a driver imported while capture is on, once its package has run."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _DRIVERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(name, spec.loader)
                return spec
        return None


_finder = _Finder()


def install(scope: tuple[contextvars.ContextVar[object], object] | None = None) -> None:
    """Capture from now on (nested: each install() needs its uninstall()); with scope
    (var, mark), only in contexts where var holds mark."""
    global _original, _users
    _users += 1
    if scope is not None:
        _core.query_scope(*scope)
    if _users == 1:
        _original = sqlite3.dbapi2.connect
        sqlite3.connect = sqlite3.dbapi2.connect = _connect
        for name in _DRIVERS:
            if name in sys.modules:
                _patch(name, sys.modules[name])
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    global _original, _users
    if _users == 0:
        return
    _users -= 1
    if _users == 0 and _original is not None:
        _core.query_scope(None, None)
        sqlite3.connect = sqlite3.dbapi2.connect = _original
        _original = None
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        while _patched:
            owner, method, original = _patched.pop()
            setattr(owner, method, original)
