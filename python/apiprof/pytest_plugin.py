"""The pytest plugin (entry point ``pytest11``): ``pytest --apiprof[=DIR]`` writes one profile
per test, and ``@pytest.mark.apiprof(...)`` budgets fail a test that exceeds them:

    @pytest.mark.apiprof(max_calls={"app.db:query": 3}, max_queries=2, max_alloc="2 MB",
                         max_ms=50)

``max_calls``: calls of each ``module:qualname`` during the test; ``max_queries``: database
statements (the ``queries=True`` capture); ``max_alloc``: bytes allocated (every block,
``memory="full"``); ``max_ms``: the test's wall time, measured with the tracer running.
Counts are exact. A failing budget fails the test with the offending call paths. Nothing is
imported from apiprof's core until a test asks for it."""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DEFAULT_DIR = "apiprof-tests"
PATHS_SHOWN = 5
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_MARKER_KEYS = {"max_calls", "max_queries", "max_alloc", "max_ms"}


def parse_bytes(value: int | str) -> int:
    """``2048``, ``"2 MB"`` (powers of 1000) or ``"2 MiB"`` (powers of 1024) as bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    if m is None or m.group(2).upper() not in _UNITS:
        raise ValueError(f"apiprof marker: max_alloc {value!r} is not a size "
                                "(e.g. 2048, '512 KB', '2 MiB')")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclass
class Budgets:
    max_calls: dict[str, int] = field(default_factory=dict)
    max_queries: int | None = None
    max_alloc: int | None = None
    max_ms: float | None = None

    @classmethod
    def of(cls, marker: pytest.Mark | None) -> Budgets:
        """The marker's budgets; ValueError names a bad one."""
        if marker is None:
            return cls()
        unknown = set(marker.kwargs) - _MARKER_KEYS
        if marker.args or unknown:
            raise ValueError(f"apiprof marker takes only keywords {sorted(_MARKER_KEYS)}")
        calls = dict(marker.kwargs.get("max_calls") or {})
        for target in calls:
            if ":" not in target:
                raise ValueError(f"apiprof marker: max_calls wants 'module:qualname', "
                                        f"got {target!r}")
        alloc = marker.kwargs.get("max_alloc")
        return cls(max_calls=calls, max_queries=marker.kwargs.get("max_queries"),
                   max_alloc=None if alloc is None else parse_bytes(alloc),
                   max_ms=marker.kwargs.get("max_ms"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("apiprof")
    group.addoption("--apiprof", nargs="?", const=DEFAULT_DIR, default=None, metavar="DIR",
                    help=f"write an apiprof profile of each test to DIR ({DEFAULT_DIR})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "apiprof(max_calls=None, max_queries=None, max_alloc=None, max_ms=None): "
                   "fail the test when it exceeds these budgets (exact counts)")


def _file_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200] + ".apiprof"


def _call_paths(profile: Any, target: str, test: str) -> list[tuple[int, str]]:
    """(calls, "test > b > target") of every call path that reaches ``target``, from the
    test function on (pytest's own frames below it left out)."""
    from ._check_measure import calls_of

    out: list[tuple[int, str]] = []
    for ti in range(len(profile.trees())):
        nodes = profile.nodes(ti)
        for node in nodes:
            if node["calls"] and calls_of([node], target):
                chain, at = [], node
                while at is not None and (not chain or chain[-1] != test):
                    if at["qualname"]:
                        chain.append(at["qualname"])
                    at = None if at["parent"] is None else nodes[at["parent"]]
                out.append((node["calls"], " > ".join(reversed(chain))))
    return sorted(out, key=lambda p: -p[0])[:PATHS_SHOWN]


def violations(budgets: Budgets, profile: Any, elapsed_ms: float, test: str) -> list[str]:
    """One message per exceeded budget, with where it went."""
    from ._check_measure import calls_of

    out: list[str] = []
    functions = list(profile.functions())
    for target, limit in budgets.max_calls.items():
        calls = calls_of(functions, target)
        if calls > limit:
            paths = "".join(f"\n    {n} x {p}" for n, p in _call_paths(profile, target, test))
            out.append(f"{target}: {calls} calls, budget {limit}; call paths:{paths}")
    if budgets.max_queries is not None:
        queries = profile.queries()
        total = sum(q["count"] for q in queries)
        if total > budgets.max_queries:
            sites = "".join(f"\n    {q['count']} x {q['statement']}  at {q['file']}:{q['line']} "
                            f"({q['function']})"
                            for q in sorted(queries, key=lambda q: -q["count"])[:PATHS_SHOWN])
            out.append(f"{total} queries, budget {budgets.max_queries}:{sites}")
    if budgets.max_alloc is not None:
        total = sum(f.get("alloc_bytes", 0) for f in functions)
        if total > budgets.max_alloc:
            top = sorted(functions, key=lambda f: -f.get("alloc_bytes", 0))[:PATHS_SHOWN]
            where = "".join(f"\n    {f.get('alloc_bytes', 0)} B in {f['qualname']} "
                            f"({f['file']}:{f['line']})" for f in top)
            out.append(f"{total} bytes allocated, budget {budgets.max_alloc}:{where}")
    if budgets.max_ms is not None and elapsed_ms > budgets.max_ms:
        top = sorted(functions, key=lambda f: -f["self_ns"])[:PATHS_SHOWN]
        where = "".join(f"\n    {f['self_ns'] / 1e6:.1f} ms self in {f['qualname']}"
                        for f in top)
        out.append(f"{elapsed_ms:.1f} ms, budget {budgets.max_ms} ms (traced):{where}")
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, Any]:
    marker = item.get_closest_marker("apiprof")
    out_dir = item.config.getoption("apiprof")
    if marker is None and out_dir is None:
        return (yield)
    try:
        budgets = Budgets.of(marker)
    except ValueError as e:  # the test fails on one line; the other tests still run
        pytest.fail(str(e), pytrace=False)
    from ._profiler import Profiler

    profiler = Profiler(queries=True, memory="full" if budgets.max_alloc is not None else None,
                        stall_threshold=None)
    t0 = time.perf_counter()
    profiler.start()
    try:
        result = yield
    finally:
        profiler.stop()
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            profiler.save(Path(out_dir) / _file_name(item.nodeid))
    test = getattr(item, "function", None)
    found = violations(budgets, profiler.profile, elapsed_ms,
                       getattr(test, "__qualname__", item.name))
    if found:
        pytest.fail("apiprof budget exceeded:\n  " + "\n  ".join(found), pytrace=False)
    return result
