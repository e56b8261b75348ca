"""The pytest plugin (apiprof.pytest_plugin, registered as a pytest11 entry point): inner
test files run by pytester pass and fail as their apiprof budgets declare, with exact counts
and the offending call paths in the failure; --apiprof=DIR writes a profile per test."""

from __future__ import annotations

import pytest
from apiprof import _core

pytest_plugins = ["pytester"]

INNER = """
import sqlite3
import time

import pytest


def helper():
    return 1


@pytest.mark.apiprof(max_calls={"test_inner:helper": 3})
def test_calls_within():
    for _ in range(3):
        helper()


@pytest.mark.apiprof(max_calls={"test_inner:helper": 3})
def test_calls_over():
    for _ in range(4):
        helper()


def run_statements(n):
    db = sqlite3.connect(":memory:")
    for i in range(n):
        db.execute("SELECT ?", (i,)).fetchone()
    db.close()


@pytest.mark.apiprof(max_queries=2)
def test_queries_within():
    run_statements(2)


@pytest.mark.apiprof(max_queries=2)
def test_queries_over():
    run_statements(3)


@pytest.mark.apiprof(max_alloc="1 MB")
def test_alloc_within():
    assert len(bytearray(10_000)) == 10_000


@pytest.mark.apiprof(max_alloc="1 MB")
def test_alloc_over():
    assert len(bytearray(4_000_000)) == 4_000_000


@pytest.mark.apiprof(max_ms=60_000)
def test_time_within():
    helper()


@pytest.mark.apiprof(max_ms=1)
def test_time_over():
    time.sleep(0.05)


def test_unmarked():
    helper()
"""


def test_budgets_pass_and_fail_as_declared(pytester: pytest.Pytester):
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("--apiprof=profiles", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=4)
    out = result.stdout.str()
    for name in ("calls_over", "queries_over", "alloc_over", "time_over"):
        assert f"FAILED test_inner.py::test_{name}" in out
    result.stdout.fnmatch_lines([
        "*apiprof budget exceeded:*",
        "*test_inner:helper: 4 calls, budget 3; call paths:*",
        "    4 x test_calls_over > helper",
        "*3 queries, budget 2:*",
        "*3 x SELECT ?  at *test_inner.py:*run_statements*",
        "*bytes allocated, budget 1000000:*",
        "*ms, budget 1 ms (traced):*",
        "*ms self in time.sleep",
    ])
    profiles = sorted(p.name for p in (pytester.path / "profiles").iterdir())
    assert len(profiles) == 9
    calls = next(p for p in profiles if "test_calls_over" in p)
    functions = _core.load(str(pytester.path / "profiles" / calls)).functions()
    assert sum(f["calls"] for f in functions if f["qualname"] == "helper") == 4


def test_without_the_option_only_marked_tests_are_profiled(pytester: pytest.Pytester):
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=4)
    assert not (pytester.path / "apiprof-tests").exists()


def test_bad_marker_fails_its_test_on_one_line(pytester: pytest.Pytester):
    pytester.makepyfile(test_bad="""
import pytest

@pytest.mark.apiprof(max_alloc="lots")
def test_x():
    pass
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_alloc 'lots' is not a size*"])
    assert "Traceback" not in result.stdout.str() and "def parse_bytes" not in result.stdout.str()
