"""Profiles for the report tests, written in the native format (docs/format.md) here.

``shop_spec()`` is a small profile shaped like a FastAPI app: two routes in two trees
(labels route/thread/task), recursion, a C builtin, await time, CPU time, allocations,
line-level frames for one function (its source is a real file written beside the
profile), and an event timeline. ``big_spec(n)`` is a synthetic profile of about ``n``
nodes. Every value is fixed, so tests can assert exact totals.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from apiprof import _core

APP = "/srv/shop/app.py"
DB = "/srv/shop/db.py"


def fr(qual: str, file: str = APP, line: int = 1, lineno: int = 0, kind: int = 1) -> tuple:
    return (qual, file, line, lineno, kind)


MAIN = fr("<module>", APP, 1)
RUN = fr("Server.run", APP, 10)
LIST = fr("list_items", APP, 20)
GET = fr("get_item", APP, 40)
QUERY = fr("query", DB, 5)
FIB = fr("fib", APP, 60)
SLEEP = fr("time.sleep", "~", 0, 0, 2)
APPEND = fr("list.append", "~", 0, 0, 3)


def shop_spec(source: Path | None = None) -> dict:
    """The shop profile; with ``source``, line-level frames of ``render`` point into that
    file (which is written) so that the HTML report can embed its lines."""
    render_file = str(source) if source else APP
    r_l3 = fr("render", render_file, 2, 3)
    r_l4 = fr("render", render_file, 2, 4)
    if source:
        source.write_text("# shop template\ndef render(rows):\n    out = [r for r in rows]\n"
                          "    return ''.join(out)\n")
    t1 = [
        ([MAIN], {"self_ns": 1_000, "calls": 1}),
        ([MAIN, RUN], {"self_ns": 2_000, "calls": 1, "cpu_ns": 1_500}),
        ([MAIN, RUN, LIST], {"self_ns": 10_000, "calls": 4, "cpu_ns": 9_000, "await_ns": 50_000}),
        ([MAIN, RUN, LIST, QUERY], {"self_ns": 80_000, "calls": 40, "cpu_ns": 5_000,
                                    "await_ns": 400_000, "alloc_bytes": 4096}),
        # Line mode: the frames of render carry the line that ran.
        ([MAIN, RUN, LIST, r_l3], {"self_ns": 30_000, "calls": 4, "alloc_bytes": 1024}),
        ([MAIN, RUN, LIST, r_l4], {"self_ns": 6_000, "calls": 0}),
        ([MAIN, RUN, LIST, r_l4, APPEND], {"self_ns": 2_000, "calls": 100}),
    ]
    t2 = [
        ([MAIN], {"self_ns": 0, "calls": 1}),
        ([MAIN, RUN], {"self_ns": 500, "calls": 1}),
        ([MAIN, RUN, GET], {"self_ns": 5_000, "calls": 2, "cpu_ns": 4_000}),
        ([MAIN, RUN, GET, FIB], {"self_ns": 1_000, "calls": 2}),
        ([MAIN, RUN, GET, FIB, FIB], {"self_ns": 3_000, "calls": 4}),
        ([MAIN, RUN, GET, FIB, FIB, FIB], {"self_ns": 4_000, "calls": 8}),
        ([MAIN, RUN, GET, SLEEP], {"self_ns": 20_000, "calls": 2}),
        ([MAIN, RUN, GET, QUERY], {"self_ns": 8_000, "calls": 2, "await_ns": 30_000}),
    ]
    events = [
        (0, RUN, 1_000_000, 200_000),
        (0, LIST, 1_010_000, 150_000),
        (0, QUERY, 1_020_000, 80_000),
        (1, GET, 1_300_000, 40_000),
        (1, SLEEP, 1_305_000, 20_000),
    ]
    return {
        "meta": {"clock": "wall", "argv": "shop app", "tool": "apiprof-test"},
        "trees": [
            {"labels": {"thread": "MainThread", "route": "GET /items", "task": "Task-1"},
             "nodes": t1},
            {"labels": {"thread": "worker-1", "route": "GET /items/{id}", "task": "Task-2"},
             "nodes": t2},
        ],
        "events": events,
    }


# Exact totals of shop_spec, by metric (sums of the values above).
SHOP_TOTALS = {
    "wall": 1_000 + 2_000 + 10_000 + 80_000 + 30_000 + 6_000 + 2_000
    + 500 + 5_000 + 1_000 + 3_000 + 4_000 + 20_000 + 8_000,
    "cpu": 1_500 + 9_000 + 5_000 + 4_000,
    "await": 50_000 + 400_000 + 30_000,
    "memory": 4096 + 1024,
}
SHOP_ROUTE_ITEMS_WALL = 1_000 + 2_000 + 10_000 + 80_000 + 30_000 + 6_000 + 2_000


def big_spec(nodes: int = 100_000, fanout: int = 8, functions: int = 2_000) -> dict:
    """``nodes`` nodes below one ``<module>`` frame: a tree of the given fan-out over
    ``functions`` distinct functions in 50 files, self time varying by node."""
    frames = [fr(f"mod{i % 50}.func{i}", f"/srv/big/mod{i % 50}.py", 10 + i)
              for i in range(functions)]
    # One entry point, as in a real program, and functions in layers (a function at
    # depth d calls functions of layer d + 1): no call cycles, as snakeviz needs.
    layers = 8
    per_layer = max(functions // layers, 1)
    top = fr("<module>", "/srv/big/main.py", 1)
    specs = [([top], {"self_ns": 1_000, "calls": 1})]
    paths: list[list[tuple]] = [[top]]
    i = 0
    while len(specs) < nodes:
        parent = paths[i // fanout]
        layer = min(len(parent) - 1, layers - 1)
        k = len(specs)
        path = parent + [frames[layer * per_layer + (k * 7919) % per_layer]]
        paths.append(path)
        specs.append((path, {"self_ns": 1_000 + (k * 37) % 5_000, "calls": 1 + k % 3}))
        i += 1
    return {"meta": {"clock": "wall", "argv": "synthetic"},
            "trees": [{"labels": {"thread": "MainThread"}, "nodes": specs}]}


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _text(s: str) -> bytes:
    b = s.encode()
    return _varint(len(b)) + b


class _Builder:
    """A profile as the model holds it (interned strings and frames, trees of nodes with
    a metric vector), encoded as the native file: header, chunks with zlib's CRC-32."""

    def __init__(self) -> None:
        self.strs: dict[str, int] = {"": 0}
        self.frames: dict[tuple, int] = {(0, 0, 0, 0, 0, 0): 0}
        self.metric = {m["name"]: m["index"] for m in _core.metrics()}

    def intern(self, s: str) -> int:
        return self.strs.setdefault(s, len(self.strs))

    def frame(self, spec: tuple) -> int:
        qual, file, line, lineno, *rest = spec
        kind = rest[0] if rest else 1
        if not 1 <= kind <= 4:
            raise ValueError("frame kind must be 1..4")
        name = qual.rsplit(".", 1)[-1] if kind == 1 else qual
        key = (self.intern(name), self.intern(qual), self.intern(file), line, lineno, kind)
        return self.frames.setdefault(key, len(self.frames))

    def tree(self, tspec: dict) -> bytes:
        labels = [(self.intern(k), self.intern(v)) for k, v in tspec.get("labels", {}).items()]
        parent, frame, values = [0xFFFFFFFF], [0], [[0] * len(self.metric)]
        child: dict[tuple[int, int], int] = {}
        given_calls: set[int] = set()
        explicit_total = False
        for stack, metrics in tspec["nodes"]:
            n = 0
            for f in stack:
                key = (n, self.frame(f))
                if key not in child:
                    child[key] = len(parent)
                    parent.append(n)
                    frame.append(key[1])
                    values.append([0] * len(self.metric))
                n = child[key]
            for k, v in metrics.items():
                if k not in self.metric:
                    raise ValueError(f"unknown metric {k}")
                values[n][self.metric[k]] += v
                explicit_total |= k == "total_ns"
                if k == "calls":
                    given_calls.add(n)
        calls, self_ns, total = (self.metric[k] for k in ("calls", "self_ns", "total_ns"))
        for i in range(1, len(parent)):
            if values[i][calls] == 0 and i not in given_calls:
                values[i][calls] = 1
            if not explicit_total:
                values[i][total] = values[i][self_ns]
        if not explicit_total:
            for i in range(len(parent) - 1, 0, -1):
                values[parent[i]][total] += values[i][total]
        mask = 0
        for row in values:
            for k, v in enumerate(row):
                if v:
                    mask |= 1 << k
        out = bytearray(_varint(len(labels)))
        for k, v in labels:
            out += _varint(k) + _varint(v)
        out += _varint(mask) + _varint(len(parent))
        for i, row in enumerate(values):
            if i:
                out += _varint(i - parent[i]) + _varint(frame[i])
            for k, v in enumerate(row):
                if mask >> k & 1:
                    out += _varint(v)
        return bytes(out)

    def events(self, spec: dict) -> bytes:
        events = list(spec["events"])
        cap = spec.get("events_capacity") or max(len(events), 1)
        kept = [(t, self.frame(f), start, dur) for t, f, start, dur in events][-cap:]
        out = bytearray(_varint(cap) + _varint(len(events) - len(kept)) + _varint(len(kept)))
        prev = 0
        for tree, f, start, dur in kept:
            d = start - prev
            out += _varint(d << 1 if d >= 0 else (-d << 1) - 1)
            out += _varint(dur) + _varint(f) + _varint(tree)
            prev = start
        return bytes(out)

    def stalls(self, spec: dict) -> bytes:
        out = bytearray(_varint(len(spec["stalls"])) + _varint(0))
        prev = 0
        for st in spec["stalls"]:
            d = st["start_ns"] - prev
            out += _varint(d << 1 if d >= 0 else (-d << 1) - 1) + _varint(st["dur_ns"])
            out += _varint(self.frame(st["function"])) + _varint(st.get("line", 0))
            for k in ("thread", "route", "task"):
                out += _varint(self.intern(st.get(k, "")))
            out += _varint(len(st["stack"])) + b"".join(_varint(self.frame(f)) for f in st["stack"])
            prev = st["start_ns"]
        return bytes(out)

    def file(self, spec: dict) -> bytes:
        meta = spec.get("meta", {})
        if not isinstance(spec.get("trees"), list):
            raise ValueError("spec needs a list 'trees'")
        trees = [self.tree(t) for t in spec["trees"]]
        events = self.events(spec) if spec.get("events") is not None else None
        stalls = self.stalls(spec) if spec.get("stalls") else None
        strs = _varint(0) + _varint(len(self.strs)) + b"".join(_text(s) for s in self.strs)
        frames = _varint(0) + _varint(len(self.frames)) + b"".join(
            b"".join(_varint(x) for x in f) for f in self.frames)
        chunks = [(b"META", _varint(len(meta)) + b"".join(_text(k) + _text(v) for k, v in
                                                           meta.items())),
                  (b"STRS", strs), (b"FRMS", frames)]
        chunks += [(b"TREE", t) for t in trees]
        if events is not None:
            chunks.append((b"EVNT", events))
        if stalls is not None:
            chunks.append((b"STLS", stalls))
        chunks.append((b"END ", b""))
        out = bytearray(b"APIPROF\0" + struct.pack("<II", 1, 0))
        for tag, payload in chunks:
            out += tag + struct.pack("<I", len(payload)) + payload
            out += struct.pack("<I", zlib.crc32(payload))
        return bytes(out)


def write(spec: dict, path: Path) -> Path:
    """Write the profile spec describes as a native file at path.

    spec = {'meta': {..}, 'trees': [{'labels': {..}, 'nodes': [([(qualname, file, line,
    lineno[, kind]), ...], {metric: value})]}], 'events': [(tree, frame, start_ns,
    dur_ns)], 'events_capacity': n, 'stalls': [{'start_ns', 'dur_ns', 'function': frame,
    'line', 'thread', 'route', 'task', 'stack': [frame, ...]}]}.  Nodes without calls get
    1; total_ns is derived from self_ns unless given."""
    path.write_bytes(_Builder().file(spec))
    return path


def write_chain(path: Path, depth: int, self_ns: int = 10) -> Path:
    """A profile whose one tree is a chain ``depth`` nodes deep (f and g calling each
    other), each node with ``self_ns`` of its own: a deep recursion, written directly
    (the node specs of ``write`` would hold every node's whole path)."""
    b = _Builder()
    f, g = b.frame(fr("f", APP, 1)), b.frame(fr("g", APP, 5))
    metric = [b.metric[k] for k in ("calls", "self_ns", "total_ns")]
    mask = sum(1 << k for k in metric)
    tree = bytearray(_varint(0) + _varint(mask) + _varint(depth + 1))
    tree += bytes(3)   # the root: no values
    for i in range(1, depth + 1):
        tree += _varint(1) + _varint(f if i % 2 else g)
        values = {"calls": 1, "self_ns": self_ns, "total_ns": (depth - i + 1) * self_ns}
        tree += b"".join(_varint(values[k]) for k in ("calls", "self_ns", "total_ns")
                         if b.metric[k] in metric)
    out = bytearray(b.file({"meta": {"clock": "wall"}, "trees": []}))
    end = out.rindex(b"END ")
    chunk = b"TREE" + struct.pack("<I", len(tree)) + tree + struct.pack("<I", zlib.crc32(tree))
    path.write_bytes(bytes(out[:end]) + chunk + bytes(out[end:]))
    return path
