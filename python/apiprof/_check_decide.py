"""The decisions of ``apiprof check``: per route and metric, regressed / improved / unchanged,
from a baseline and a new measurement (docs/check.md says why each test is what it is).

Timing: the per-round medians of the two runs are compared with a one-sided Mann-Whitney U
test (exact null distribution, ties counted half) in each direction; a change is a
regression only when the test rejects at ``alpha`` *and* the medians differ by at least
``min_effect`` (relative). Counts per request are exact: any difference is a change.
Allocated bytes per request: a change beyond ``alloc_tolerance`` (relative)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import cache
from typing import Any

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"


@dataclass
class Thresholds:
    alpha: float = 0.01
    min_effect: float = 0.10
    alloc_tolerance: float = 0.10


@dataclass
class Decision:
    route: str
    metric: str
    verdict: str
    baseline: float | None
    current: float
    detail: str


@cache
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """Number of arrangements of m and n untied values giving each U = 0 .. m*n (the exact
    null distribution of Mann-Whitney U, by the usual recurrence on the largest value)."""
    if m == 0 or n == 0:
        return (1,)
    a = _u_counts(m - 1, n)  # the largest value is from the first sample: U grows by n
    b = _u_counts(m, n - 1)
    out = [0] * (m * n + 1)
    for u, c in enumerate(a):
        out[u + n] += c
    for u, c in enumerate(b):
        out[u] += c
    return tuple(out)


def p_greater(xs: list[float], ys: list[float]) -> float:
    """One-sided p-value of "xs tend to be larger than ys" (Mann-Whitney U, exact; a tie
    counts one half, which makes the test slightly conservative)."""
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in xs for y in ys)
    dist = _u_counts(len(xs), len(ys))
    total = math.comb(len(xs) + len(ys), len(xs))
    at_least = sum(c for k, c in enumerate(dist) if k >= math.ceil(u - 1e-9))
    return at_least / total


def decide_timing(route: str, base: list[float], now: list[float], t: Thresholds) -> Decision:
    mb, mn = statistics.median(base), statistics.median(now)
    change = (mn - mb) / mb if mb > 0 else 0.0
    up, down = p_greater(now, base), p_greater(base, now)
    verdict = UNCHANGED
    if up <= t.alpha and change >= t.min_effect:
        verdict = REGRESSED
    elif down <= t.alpha and -change >= t.min_effect:
        verdict = IMPROVED
    p = up if change >= 0 else down
    return Decision(route, "latency_p50_ms", verdict, round(mb, 4), round(mn, 4),
                    f"{change:+.1%} (median of {len(now)} round medians; Mann-Whitney "
                    f"p={p:.4f}, alpha {t.alpha:g}, min effect {t.min_effect:.0%})")


def _exact(route: str, metric: str, base: float | None, now: float) -> Decision:
    if base is None:
        return Decision(route, metric, UNCHANGED, None, now, "not in the baseline")
    verdict = UNCHANGED if math.isclose(now, base, abs_tol=1e-9) else \
        REGRESSED if now > base else IMPROVED
    return Decision(route, metric, verdict, base, now, f"{base:g} -> {now:g} per request (exact)")


def _budget(route: str, metric: str, limit: float, now: float) -> Decision:
    verdict = REGRESSED if now > limit else UNCHANGED
    return Decision(route, metric, verdict, limit, now,
                    f"{now:g} per request, budget {limit:g}")


def decide(baseline: dict[str, Any], current: dict[str, Any], t: Thresholds,
           budgets: dict[str, dict[str, Any]]) -> list[Decision]:
    """Every decision, route by route in the baseline's order."""
    out: list[Decision] = []
    for route, base in baseline["routes"].items():
        now = current["routes"].get(route)
        if now is None:
            continue
        if "round_p50_ms" in base and "round_p50_ms" in now:
            out.append(decide_timing(route, base["round_p50_ms"], now["round_p50_ms"], t))
        out.append(_exact(route, "queries", base.get("queries"), now["queries"]))
        for target, calls in now["calls"].items():
            out.append(_exact(route, f"calls {target}", base["calls"].get(target), calls))
        if "alloc_bytes" in now and base.get("alloc_bytes") is not None:
            b, n = base["alloc_bytes"], now["alloc_bytes"]
            change = (n - b) / b if b > 0 else 0.0
            verdict = REGRESSED if change > t.alloc_tolerance else \
                IMPROVED if -change > t.alloc_tolerance else UNCHANGED
            out.append(Decision(route, "alloc_bytes", verdict, round(b), round(n),
                                f"{change:+.1%} bytes per request (tolerance "
                                f"{t.alloc_tolerance:.0%})"))
        budget = budgets.get(route, {})
        if "max_queries" in budget:
            out.append(_budget(route, "budget queries", budget["max_queries"], now["queries"]))
        for target, limit in budget.get("max_calls", {}).items():
            calls = now["calls"].get(target, 0.0)
            out.append(_budget(route, f"budget calls {target}", limit, calls))
        if "max_ms" in budget and "round_p50_ms" in now:
            out.append(_budget(route, "budget p50 ms", budget["max_ms"],
                               statistics.median(now["round_p50_ms"])))
    return out
