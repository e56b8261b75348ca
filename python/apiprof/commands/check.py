"""`apiprof check`: a CI gate. Measures the app again and compares it with a baseline that
``apiprof bench --app ... --save-baseline FILE`` recorded.

    apiprof check --baseline FILE [--app module:app] [--app-dir DIR] [--format F] [-o FILE]

Settings come from pyproject.toml's [tool.apiprof.check] (docs/check.md), the command line
overriding them. Exit 1 when any route regressed, 0 otherwise, 2 on bad input."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from .. import _check_decide as decide
from .. import _check_measure as measure
from .. import _check_report as report
from .. import _core, _diff
from .._output import output_path
from .._table import format_ns
from ..errors import UsageError

BASELINE_TOOL = "apiprof-baseline"
BASELINE_SCHEMA = 1
SETTING_KEYS = {"app", "app_dir", "paths", "rounds", "requests", "count", "memory", "alpha",
                "min_effect", "alloc_tolerance", "budgets"}
BUDGET_KEYS = {"max_queries", "max_calls", "max_ms"}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="CI gate: measure the app again and compare with a baseline",
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings, the statistical test and CI examples: docs/check.md.")
    p.add_argument("--baseline", metavar="FILE", required=True,
                   help="the baseline apiprof bench --save-baseline wrote")
    add_measure_arguments(p)
    p.add_argument("--format", choices=sorted(report.FORMATS), default="text",
                   help="text (default), json, junit (JUnit XML) or markdown")
    p.add_argument("-o", "--output", metavar="FILE", help="write the result here (default stdout)")
    p.set_defaults(func=run)


def add_measure_arguments(p: argparse.ArgumentParser, app: bool = True) -> None:
    """The options bench --save-baseline and check share (bench has its own --app)."""
    if app:
        p.add_argument("--app", metavar="MODULE:APP", help="the ASGI app (default: the baseline's)")
        p.add_argument("--app-dir", metavar="DIR", help="working directory of the app")
    p.add_argument("--path", dest="paths", action="append", metavar="/PATH",
                   help="a GET path to measure, one per route (repeatable)")
    p.add_argument("--rounds", type=int, help="timing rounds (5)")
    p.add_argument("--round-requests", type=int,
                   help="requests per route and round (20)")
    p.add_argument("--count", action="append", metavar="MODULE:QUALNAME",
                   help="count the calls of this function per request (repeatable)")
    p.add_argument("--memory", action="store_true", default=None,
                   help="also compare the bytes allocated per request")
    p.add_argument("--no-timing", dest="timing", action="store_false",
                   help="exact counts only (no latency rounds)")
    p.add_argument("--config", metavar="FILE", default="pyproject.toml",
                   help="where [tool.apiprof.check] is read (pyproject.toml; missing: none)")


def read_config(path: str) -> dict[str, Any]:
    """[tool.apiprof.check] of a pyproject.toml (empty when the file does not exist)."""
    file = Path(path)
    if not file.is_file():
        if path != "pyproject.toml":
            raise UsageError(f"--config {path}: no such file")
        return {}
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    config = data.get("tool", {}).get("apiprof", {}).get("check", {})
    if not isinstance(config, dict):
        raise UsageError(f"{path}: [tool.apiprof.check] must be a table")
    unknown = set(config) - SETTING_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key in [tool.apiprof.check]: {sorted(unknown)[0]}")
    for route, budget in config.get("budgets", {}).items():
        if not isinstance(budget, dict) or set(budget) - BUDGET_KEYS:
            raise UsageError(f"{path}: budgets.{route!r} takes only {sorted(BUDGET_KEYS)}")
    return config


def _pick(args: argparse.Namespace, config: dict[str, Any], key: str, default: Any) -> Any:
    value = getattr(args, key, None)
    return value if value is not None else config.get(key, default)


def settings_of(args: argparse.Namespace, config: dict[str, Any],
                fallback: dict[str, Any]) -> measure.Settings:
    """Command line, then [tool.apiprof.check], then ``fallback`` (the baseline's own)."""
    merged = {**fallback, **config}
    app = _pick(args, merged, "app", None)
    if app is None or ":" not in app:
        raise UsageError("--app module:attribute is needed (or app in [tool.apiprof.check])")
    app_dir = Path(_pick(args, merged, "app_dir", "."))
    if not app_dir.is_dir():
        raise UsageError(f"app directory {app_dir} is not a directory")
    paths = _pick(args, merged, "paths", None)
    if not paths or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise UsageError("give the GET paths to measure: --path /PATH (or paths in "
                         "[tool.apiprof.check])")
    count = _pick(args, merged, "count", [])
    for target in count:
        if not isinstance(target, str) or ":" not in target:
            raise UsageError(f"count wants module:qualname, got {target!r}")
    rounds = int(_pick(args, merged, "rounds", 5))
    requests = int(args.round_requests or merged.get("requests", 20))
    if rounds < 2 or requests < 1:
        raise UsageError("rounds must be 2 or more and requests per round 1 or more")
    return measure.Settings(app=app, app_dir=app_dir, paths=list(paths), rounds=rounds,
                            requests=requests, count=list(count),
                            memory=bool(_pick(args, merged, "memory", False)),
                            timing=getattr(args, "timing", True))


def check_budget_routes(config: dict[str, Any], routes: dict[str, Any], where: str) -> None:
    for route in config.get("budgets", {}):
        if route not in routes:
            raise UsageError(f"{where}: budget for unknown route {route!r} (measured: "
                             f"{', '.join(routes)})")


def save_baseline(args: argparse.Namespace, output: str) -> int:
    """``apiprof bench --save-baseline FILE``: measure and write the baseline (JSON), the
    tracer's profile beside it (FILE.apiprof)."""
    config = read_config(args.config)
    if args.url and not args.paths:
        args.paths = [args.url]
    if args.app_dir == "." and "app_dir" in config:  # bench's default gives way to the config
        args.app_dir = None
    settings = settings_of(args, config, {})
    out = Path(output)
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: no directory {out.parent}")
    profile = out.with_suffix(".apiprof")
    if profile == out:
        raise UsageError(f"--save-baseline {out}: name the baseline FILE.json (its profile "
                         "goes to FILE.apiprof)")
    try:
        measured = measure.measure(settings, profile)
    except measure.MeasureError as e:
        print(f"apiprof bench: {e}", file=sys.stderr)
        return 1
    check_budget_routes(config, measured["routes"], args.config)
    baseline = {"tool": BASELINE_TOOL, "schema": BASELINE_SCHEMA, "app": settings.app,
                "app_dir": str(settings.app_dir), "paths": settings.paths,
                "rounds": settings.rounds, "requests": settings.requests,
                "count": settings.count, "memory": settings.memory,
                "profile": profile.name, **measured}
    with output_path(str(out)) as path:
        Path(path).write_text(json.dumps(baseline, indent=1) + "\n")
    for name, row in measured["routes"].items():
        p50 = row.get("latency_ms", {}).get("p50")
        print(f"{name}: p50 {p50 if p50 is not None else '-'} ms, {row['queries']:g} queries"
              f"/request" + "".join(f", {t} {c:g}/request" for t, c in row["calls"].items()))
    print(f"baseline: {out} (profile: {profile})")
    return 0


def read_baseline(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--baseline {path}: no such file")
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"--baseline {path}: not a baseline (not JSON; make one with "
                         "apiprof bench --app ... --save-baseline FILE)") from None
    if not isinstance(data, dict) or data.get("tool") != BASELINE_TOOL:
        raise UsageError(f"--baseline {path}: not a baseline (apiprof bench --save-baseline "
                         "writes one)")
    if data.get("schema") != BASELINE_SCHEMA:
        raise UsageError(f"--baseline {path}: schema {data.get('schema')!r}, this apiprof "
                         f"reads {BASELINE_SCHEMA}")
    return data


def grown_most(before: Path, after: Path, route: str, app_dir: Path) -> str | None:
    """What grew most in ``route`` between the two tracer rounds (apiprof diff of their
    warm phases, per request): the function whose self time grew most and, when that is
    not the app's own code, the innermost function of the app that carries at least
    80% of the app's largest growth (the slowed function, its callee being a library or
    a builtin). None when there is no profile to compare or nothing grew."""
    chosen = {"phase": "warm", "route": route}
    try:
        d = _diff.diff(_core.load(str(before)).select(chosen),
                       _core.load(str(after)).select(chosen), metric="wall")
    except (OSError, ValueError, LookupError):
        return None
    top = d.top()
    if top is None or top.delta(d.key) <= 0:
        return None
    per = " per request" if d.per == "request" else ""
    text = f"grew most: {top.qualname} (self {format_ns(top.delta(d.key))} more{per})"
    root = str(app_dir.resolve())
    own = [f for f in d.functions if f.file.startswith(root)]
    growth = max((f.delta("total_ns") for f in own), default=0.0)
    if growth > 0 and top not in own:
        inner = min((f for f in own if f.delta("total_ns") >= 0.8 * growth),
                    key=lambda f: f.b.get("total_ns", 0.0))
        text += (f", in the app's {inner.qualname} ({Path(inner.file).name}: "
                 f"{format_ns(inner.delta('total_ns'))} more{per})")
    return text


def run(args: argparse.Namespace) -> int:
    baseline = read_baseline(args.baseline)
    config = read_config(args.config)
    keys = ("app", "app_dir", "paths", "rounds", "requests", "count", "memory")
    settings = settings_of(args, config, {k: baseline[k] for k in keys if k in baseline})
    check_budget_routes(config, baseline["routes"], args.config)
    if args.output and not Path(args.output).parent.is_dir():
        raise UsageError(f"cannot write {args.output}: no directory "
                         f"{Path(args.output).parent}")
    thresholds = decide.Thresholds(
        alpha=float(config.get("alpha", 0.01)), min_effect=float(config.get("min_effect", 0.10)),
        alloc_tolerance=float(config.get("alloc_tolerance", 0.10)))
    profile = Path(args.output or "apiprof-check").with_suffix(".apiprof")
    try:
        current = measure.measure(settings, profile)
    except measure.MeasureError as e:
        print(f"apiprof check: {e}", file=sys.stderr)
        return 2
    rounds = (f"{settings.rounds} rounds of {settings.requests} requests each" if settings.timing
              else f"exact counts only, {settings.requests} requests each")
    notes = [f"{len(settings.paths)} routes, {rounds}; profile of this run: {profile}"]
    missing = sorted(set(baseline["routes"]) - set(current["routes"]))
    if missing:
        notes.append(f"not measured now (in the baseline only): {', '.join(missing)}")
    decisions = decide.decide(baseline, current, thresholds, config.get("budgets", {}))
    before = Path(args.baseline).parent / str(baseline.get("profile", ""))
    for route in sorted({d.route for d in decisions if d.verdict == decide.REGRESSED}):
        grown = grown_most(before, profile, route, settings.app_dir)
        if grown:
            notes.append(f"{route}: {grown}")
    text = report.FORMATS[args.format](decisions, notes)
    if args.output:
        with output_path(args.output) as path:
            Path(path).write_text(text)
    else:
        sys.stdout.write(text)
    return 1 if any(d.verdict == decide.REGRESSED for d in decisions) else 0
