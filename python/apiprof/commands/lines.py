"""``apiprof lines``: run a script or ``-m`` module under the line profiler; write the profile."""

from __future__ import annotations

import argparse
import builtins
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import sysconfig
import types
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from .._launch import Program, add_program_arguments, launch
from .._lines import LineProfiler, code_objects, format_lines, profile
from .._profile_file import load_profile
from .._profiler import MEMORY_MODES
from .._table import format_ns
from ..errors import UsageError
from .run import add_sampling_arguments

# A target chosen from an earlier profile: (absolute file, first line, qualname).
Target = tuple[str, int, str]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "lines", help="line-profile chosen functions of a script or module",
        description="Run a Python script (or -m module) with __main__ semantics and record, "
                    "line by line, the functions marked with @profile (put in builtins, as "
                    "kernprof does) or @apiprof.profile, those named with --function / "
                    "--module, and the --top N user functions responsible for the most time "
                    "in an earlier function profile (--from): their own time and the library "
                    "and C calls below them. Write the line profile at exit, also "
                    "on SIGINT/SIGTERM.",
        usage="apiprof lines [-o FILE] [--function MOD:QUALNAME ...] [--module MOD ...] "
              "[--from PROFILE [--top N] [--all-code]] [--memory [full|sampled]] "
              "[--memory-rate BYTES] [--memory-seed N] [-q] (script.py | -m module) [args ...]",
    )
    p.add_argument("--function", action="append", default=[], metavar="MOD:QUALNAME",
                   help="profile this function or method (repeatable)")
    p.add_argument("--module", dest="modules", action="append", default=[], metavar="MOD",
                   help="profile every function of this module (repeatable)")
    p.add_argument("--from", dest="source", metavar="PROFILE",
                   help="a function profile (apiprof run) to choose the hottest functions from")
    p.add_argument("--top", type=int, default=3, metavar="N",
                   help="with --from: how many functions, by the time they are responsible for "
                        "(default 3)")
    p.add_argument("--all-code", action="store_true",
                   help="with --from: also choose standard library and site-packages code")
    p.add_argument("--memory", nargs="?", const="full", choices=MEMORY_MODES,
                   help="also record per line the bytes allocated while it ran (its callees "
                        "included, as its time) and the net bytes (allocated - freed): full "
                        "(the default: every block, exact) or sampled (byte-sampled estimates)")
    add_sampling_arguments(p)
    add_program_arguments(p, "NAME.lines.apiprof")
    p.set_defaults(func=run)


# ---- choosing functions from a function profile ------------------------------------------------

_NESTED = ("<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<lambda>")


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")
            if k in paths}
    return tuple(d + os.sep for d in sorted(dirs))


def _is_library(file: str, libs: tuple[str, ...]) -> bool:
    real = os.path.realpath(file)
    return (real.startswith(libs) or f"{os.sep}site-packages{os.sep}" in real
            or f"{os.sep}dist-packages{os.sep}" in real)


class Pick(NamedTuple):
    """A function chosen from a profile, with the figures that chose it."""

    target: Target
    responsible_ns: int  # its own time plus the non-user code below it
    self_ns: int         # its own time
    share: float         # responsible_ns / the profile's total
    below: str           # the non-user function with the most time under it ("" if none)
    below_ns: int


def hottest(path: str, top: int, all_code: bool) -> list[Pick]:
    """The ``top`` Python functions of user code responsible for the most time
    in the profile at ``path``: the time inside them, less the time of other
    user functions below them. A node's own time goes to the nearest user
    function on its stack (itself included), so time spent in a library or C
    call counts toward the user function that made it. Comprehensions,
    generator expressions and lambdas count toward the function that contains
    them; apiprof's own code and code without a source file are not user code,
    and neither are the standard library and site-packages unless ``all_code``."""
    prof = load_profile(path)
    libs = _library_dirs()
    own = os.path.dirname(os.path.abspath(__file__)).rsplit(os.sep, 1)[0] + os.sep
    user_key: dict[tuple[str, str, str], tuple[str, str] | None] = {}
    first_line: dict[tuple[str, str], int] = {}

    def key_of(node: dict[str, Any]) -> tuple[str, str] | None:
        ident = (node["kind"], node["file"], node["qualname"])
        if ident in user_key:
            return user_key[ident]
        file = node["file"]
        key = None
        if (node["kind"] == "python" and os.path.isfile(file)
                and not os.path.abspath(file).startswith(own)
                and (all_code or not _is_library(file, libs))):
            parts = node["qualname"].split(".")
            while len(parts) > 2 and parts[-1] in _NESTED and parts[-2] == "<locals>":
                parts = parts[:-2]
            key = (os.path.abspath(file), ".".join(parts))
            if key[1] == node["qualname"]:
                first_line[key] = node["line"]
        user_key[ident] = key
        return key

    responsible: dict[tuple[str, str], int] = {}
    own_ns: dict[tuple[str, str], int] = {}
    below: dict[tuple[tuple[str, str], str], int] = {}
    total = 0
    for i in range(len(prof.trees())):
        nodes = prof.nodes(i)
        owner: list[tuple[str, str] | None] = [None] * len(nodes)
        for n in _parents_first(nodes):
            node = nodes[n]
            key = key_of(node)
            parent = node["parent"]
            if key is None and parent is not None:
                key = owner[parent]
            owner[n] = key
            total += node["self_ns"]
            if key is None:
                continue
            responsible[key] = responsible.get(key, 0) + node["self_ns"]
            if key_of(node) == key:
                own_ns[key] = own_ns.get(key, 0) + node["self_ns"]
            else:
                callee = (key, node["qualname"])
                below[callee] = below.get(callee, 0) + node["self_ns"]
    best_below: dict[tuple[str, str], tuple[int, str]] = {}
    for (key, qualname), ns in below.items():
        if (ns, qualname) > best_below.get(key, (0, "")):
            best_below[key] = (ns, qualname)
    ranked = sorted((k for k in responsible if not k[1].endswith(_NESTED)),
                    key=lambda k: (-responsible[k], k))
    return [Pick((file, first_line.get((file, q), 0), q), responsible[(file, q)],
                 own_ns.get((file, q), 0), responsible[(file, q)] / total if total else 0.0,
                 best_below.get((file, q), (0, ""))[1], best_below.get((file, q), (0, ""))[0])
            for file, q in ranked[:top]]


def _parents_first(nodes: list[dict[str, Any]]) -> list[int]:
    """Node indices ordered so that every parent comes before its children."""
    children: dict[int | None, list[int]] = {}
    for i, node in enumerate(nodes):
        children.setdefault(node["parent"], []).append(i)
    order: list[int] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        n = stack.pop()
        order.append(n)
        stack.extend(reversed(children.get(n, [])))
    return order


def why(pick: Pick) -> str:
    """One line saying why ``pick`` was chosen."""
    file, line, qualname = pick.target
    text = (f"  {qualname} ({os.path.relpath(file)}:{line}): {format_ns(pick.responsible_ns)}, "
            f"{100.0 * pick.share:.1f}% of the profile; itself {format_ns(pick.self_ns)}")
    if pick.below:
        text += f", most below it in {pick.below} ({format_ns(pick.below_ns)})"
    return text


def _walk(codes: Sequence[types.CodeType]) -> Iterator[types.CodeType]:
    stack = list(codes)
    while stack:
        code = stack.pop()
        yield code
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))


class _Resolver(importlib.abc.MetaPathFinder):
    """Adds the targets' code objects to the profiler when their module is
    executed (scripts: before they run; modules: when imported)."""

    def __init__(self, profiler: LineProfiler, targets: list[Target]) -> None:
        self.profiler = profiler
        self.targets = targets
        self.files = {t[0] for t in targets}
        self.found: set[Target] = set()

    def add(self, codes: Sequence[types.CodeType]) -> None:
        for code in _walk(codes):
            key = (os.path.abspath(code.co_filename), code.co_firstlineno, code.co_qualname)
            loose = (key[0], 0, key[2])
            for t in (key, loose):
                if t in self.targets and t not in self.found:
                    self.found.add(t)
                    self.profiler.add_function(code)

    def add_loaded(self) -> None:
        for mod in list(sys.modules.values()):
            file = getattr(mod, "__file__", None)
            if isinstance(file, str) and os.path.abspath(file) in self.files:
                self._add_module(mod)

    def _add_module(self, mod: types.ModuleType) -> None:
        try:
            codes = code_objects(mod)
        except TypeError:
            return
        self.add(codes)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        origin = spec.origin
        loader = spec.loader
        if (isinstance(origin, str) and os.path.abspath(origin) in self.files
                and isinstance(loader, importlib.machinery.SourceFileLoader)):
            resolver = self

            class _Loader(importlib.machinery.SourceFileLoader):
                def exec_module(self, module: types.ModuleType) -> None:
                    code = self.get_code(module.__name__)
                    if code is not None:
                        resolver.add([code])
                    exec(code, module.__dict__)

            spec.loader = _Loader(loader.name, loader.path)
        return spec


# ---- the command ---------------------------------------------------------------------------


def _resolve_function(spec: str) -> Any:
    mod_name, sep, qualname = spec.partition(":")
    if not sep or not mod_name or not qualname:
        raise UsageError(f"--function {spec!r}: expected MODULE:QUALNAME "
                         "(e.g. shop.recommend:similar)")
    mod = _import(mod_name, "--function")
    obj: Any = mod
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"--function {spec!r}: {mod_name} has no {qualname!r}") from None
    try:
        code_objects(obj)
    except TypeError:
        raise UsageError(f"--function {spec!r}: not a Python function or class") from None
    return obj


def _import(name: str, option: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise UsageError(f"{option} {name!r}: cannot import it ({type(e).__name__}: {e})") from None


class LineProducer:
    """The line profiler as ``apiprof lines``' producer: while the program runs,
    ``@profile`` is in builtins and the targets' modules are resolved as they load."""

    def __init__(self, profiler: LineProfiler, resolver: _Resolver) -> None:
        self.profiler = profiler
        self.resolver = resolver
        self._had_profile = hasattr(builtins, "profile")
        self._previous_profile = getattr(builtins, "profile", None)

    def start(self) -> None:
        if self.resolver.targets:
            self.resolver.add_loaded()
            sys.meta_path.insert(0, self.resolver)
        builtins.profile = profile  # type: ignore[attr-defined]
        self.profiler.start()

    def stop(self) -> None:
        self.profiler.stop()
        if self.resolver in sys.meta_path:
            sys.meta_path.remove(self.resolver)
        if self._had_profile:
            builtins.profile = self._previous_profile  # type: ignore[attr-defined]
        else:
            del builtins.profile  # type: ignore[attr-defined]
        found = self.resolver.found
        for file, line, q in self.resolver.targets:
            if (file, line, q) not in found and (file, 0, q) not in found:
                print(f"apiprof lines: {q} ({file}:{line}) was not loaded by the program",
                      file=sys.stderr)

    def save(self, output: str) -> None:
        self.profiler.save(output)

    def summary(self) -> str:
        return format_lines(self.profiler.profile)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UsageError("--top must be 1 or more")
    picks = hottest(args.source, args.top, args.all_code) if args.source else []
    targets = [p.target for p in picks]
    if args.source and not targets:
        raise UsageError(f"{args.source}: no function of user code to line-profile "
                         "(--all-code includes the standard library and site-packages)")
    program = Program.from_args(args, ".lines.apiprof")
    profiler = LineProfiler(marked=True, memory=args.memory, memory_rate=args.memory_rate,
                            memory_seed=args.memory_seed)
    for spec in args.function:
        profiler.add_function(_resolve_function(spec))
    for name in args.modules:
        mod = _import(name, "--module")
        try:
            profiler.add_module(mod)
        except TypeError:
            raise UsageError(f"--module {name!r}: defines no Python function") from None
    resolver = _Resolver(profiler, targets)
    if picks:
        print(f"apiprof lines: from {args.source}, the {len(picks)} user function(s) responsible "
              "for the most time (their own time and the library and C calls below them, "
              "not other user functions):", file=sys.stderr)
        for pick in picks:
            print(why(pick), file=sys.stderr)
    return launch("apiprof lines", program, LineProducer(profiler, resolver), quiet=args.quiet,
                  prepare=(lambda code: resolver.add([code])) if targets else None)
