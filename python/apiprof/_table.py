"""Aligned text tables: every text table of apiprof (timer report, function table, line
report, route statistics, bench summary) is a list of Columns drawn by ``render``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

Row = TypeVar("Row")
Align = Literal["left", "right", "free"]

GAP = "  "


def format_ns(ns: float) -> str:
    """A duration with a unit chosen for it: 850ns, 12.3us, 4.56ms, 1.20s."""
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


def format_ms(ns: float) -> str:
    """Nanoseconds as milliseconds with two decimals, no unit (the column title has it)."""
    return f"{ns / 1e6:.2f}"


def format_bytes(n: float) -> str:
    """A byte count with a binary unit: ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.1 GiB``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# How a metric's value is written, by its unit (the unit names of the metric catalogue,
# apiprof._core.metrics(); "ns" is short for nanoseconds).
UNIT_FORMATS: dict[str, Callable[[Any], str]] = {
    "nanoseconds": format_ns,
    "ns": format_ns,
    "count": str,
    "bytes": str,
}


@dataclass(frozen=True)
class Column(Generic[Row]):
    """One column: its ``title``, the text of a row in it (``cell``) and how it is
    aligned: ``"left"``, ``"right"``, or ``"free"`` (written as it is, not padded: only
    for the last column, e.g. a function's location or a source line)."""

    title: str
    cell: Callable[[Row], str]
    align: Align = "right"

    @classmethod
    def field(cls, title: str, key: str, fmt: Callable[[Any], str] = str,
              align: Align = "right") -> Column[Mapping[str, Any]]:
        """A column showing ``fmt(row[key])`` of dict rows."""
        return Column(title, lambda row: fmt(row[key]), align)

    @classmethod
    def metric(cls, entry: Mapping[str, str], key: str | None = None,
               blank_zero: bool = False) -> Column[Mapping[str, Any]]:
        """A column for a metric described by a catalogue entry (``name``, ``unit``,
        ``label``): titled by its label, the value ``row[key or name]`` written as its
        unit is; with ``blank_zero``, 0 is shown as "-" (a metric that did not occur)."""
        fmt = UNIT_FORMATS.get(entry["unit"], str)
        field = key or entry["name"]

        def cell(row: Mapping[str, Any]) -> str:
            value = row.get(field, 0)
            return "-" if blank_zero and not value else fmt(value)

        return Column(entry.get("label") or entry["name"], cell)


# Control characters (C0, DEL, C1) and the line and paragraph separators: what a name from a
# profiled program or a request could use to move the cursor, recolour or rewrite a terminal.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\n``):
    names go to terminals and logs one line each and change nothing there."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group(0))[1:-1], text)


def render_lines(columns: Sequence[Column[Row]], rows: Iterable[Row], rule: str = "") -> list[str]:
    """The header and one line per row, columns ``GAP`` apart, each as wide as its widest
    cell. Padding never trails a line; a free last column is written as it is. With
    ``rule`` (a character), a line of it as wide as the header follows the header."""
    for col in columns[:-1]:
        if col.align == "free":
            raise ValueError(f"column {col.title!r}: only the last column can be free")
    table = [[c.title for c in columns]]
    table.extend([printable(c.cell(row)) for c in columns] for row in rows)
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    free_last = columns[-1].align == "free"
    lines = []
    for r in table:
        cells = [
            text if col.align == "free" else
            text.ljust(width) if col.align == "left" else text.rjust(width)
            for col, text, width in zip(columns, r, widths, strict=True)
        ]
        line = GAP.join(cells)
        lines.append(line if free_last else line.rstrip())
    if rule:
        lines.insert(1, rule * len(lines[0]))
    return lines


def render(columns: Sequence[Column[Row]], rows: Iterable[Row], rule: str = "") -> str:
    """``render_lines`` as text, one newline after each line."""
    return "".join(line + "\n" for line in render_lines(columns, rows, rule))
