"""``apiprof.diff``: two profiles compared function by function (the matching and the
deltas are the C core's, ``_core.diff``; docs/diff.md). ``apiprof diff`` and
``apiprof check`` read it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from . import _core

# How a profile is given: a path to a file apiprof wrote, or a loaded _core.Profile.
ProfileArg = str | os.PathLike[str] | Any


@dataclass(frozen=True)
class FunctionDelta:
    """One function, matched across the two profiles by qualname and file (never by
    line, so an edit above it does not break the match). ``a`` and ``b`` hold every
    metric of the catalogue (``self_ns``, ``total_ns``, ``calls``, ...; per request when
    the diff is ``per == "request"``); a function missing from one side has zeros
    there. ``status``: ``"changed"`` (in both), ``"new"`` (only in B) or ``"vanished"``
    (only in A)."""

    qualname: str
    file: str
    status: str
    a: dict[str, float]
    b: dict[str, float]

    def delta(self, key: str) -> float:
        """B minus A of metric ``key`` (a catalogue name such as ``"self_ns"``)."""
        return self.b.get(key, 0.0) - self.a.get(key, 0.0)

    def relative(self, key: str) -> float | None:
        """The change of ``key`` relative to A (0.25: 25% more); None when A has none."""
        base = self.a.get(key, 0.0)
        return None if base == 0 else self.delta(key) / base


@dataclass(frozen=True)
class Diff:
    """The comparison of profile A (before) with B (after).

    ``metric`` is the view metric (``wall``, ``cpu``, ``await``, ``memory``, ``live``,
    ``samples``, as ``apiprof report --metric``) and ``key`` its self metric
    (``self_ns`` for wall) by whose absolute change ``functions`` is sorted, largest
    first. ``per`` is ``"request"`` (both profiles count requests: every figure is
    divided by its profile's requests) or ``"total"``."""

    metric: str
    key: str
    per: str
    requests_a: int
    requests_b: int
    functions: list[FunctionDelta]

    @property
    def new(self) -> list[FunctionDelta]:
        return [f for f in self.functions if f.status == "new"]

    @property
    def vanished(self) -> list[FunctionDelta]:
        return [f for f in self.functions if f.status == "vanished"]

    def top(self) -> FunctionDelta | None:
        """The function whose ``key`` changed most (the first row), or None."""
        return self.functions[0] if self.functions else None


def diff(a: ProfileArg, b: ProfileArg, *, metric: str | None = None,
         per: str | None = None) -> Diff:
    """Compare profile ``a`` (before) with ``b`` (after).

    ``metric``: a view metric name (default: the first of wall, samples, cpu, memory,
    await, live present in both). ``per``: ``"request"``, ``"total"`` or None (per
    request when both profiles count requests). Raises OSError (a file cannot be read),
    ValueError (not a profile, unknown metric, ``per="request"`` without requests) and
    LookupError (the profiles have no function in common)."""
    doc = json.loads(_core.diff(_as_core(a), _as_core(b), "json",
                                {"metric": metric, "per": per}))
    return from_json(doc)


def from_json(doc: dict[str, Any]) -> Diff:
    """The Diff of the JSON document ``apiprof diff --format json`` writes."""
    rows = [FunctionDelta(qualname=f["qualname"], file=f["file"], status=f["status"],
                          a=dict(f["a"]), b=dict(f["b"]))
            for f in doc["functions"]]
    return Diff(metric=doc["metric"], key=doc["key"], per=doc["per"],
                requests_a=int(doc["requests"][0]), requests_b=int(doc["requests"][1]),
                functions=rows)


def _as_core(p: ProfileArg) -> Any:
    if isinstance(p, (str, os.PathLike)):
        return os.fspath(p)
    return p
