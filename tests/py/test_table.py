"""apiprof._table: the one text-table renderer and columns made from metric entries."""

from __future__ import annotations

import pytest
from apiprof._table import Column, render, render_lines


def test_alignment_padding_and_rule():
    cols = [Column.field("name", "name", align="left"), Column.field("n", "n"),
            Column.field("text", "text", align="free")]
    lines = render_lines(cols, [{"name": "a", "n": 100, "text": "x  "},
                                {"name": "long", "n": 2, "text": ""}], rule="=")
    assert lines == ["name    n  text", "===============", "a     100  x  ", "long    2  "]


def test_padding_never_trails_without_a_free_column():
    cols = [Column.field("k", "k", align="left"), Column.field("v", "v", align="left")]
    assert render(cols, [{"k": "key", "v": ""}]) == "k    v\nkey\n"


def test_only_the_last_column_can_be_free():
    cols = [Column.field("a", "a", align="free"), Column.field("b", "b")]
    with pytest.raises(ValueError, match="only the last column"):
        render(cols, [{"a": 1, "b": 2}])


def test_metric_column_from_a_catalogue_entry():
    col = Column.metric({"name": "await_ns", "unit": "nanoseconds", "label": "await"},
                        blank_zero=True)
    assert col.title == "await"
    assert render([col], [{"await_ns": 1_500_000}, {"await_ns": 0}]) == " await\n1.50ms\n     -\n"
    count = Column.metric({"name": "calls", "unit": "count", "label": ""})
    assert count.title == "calls" and count.cell({"calls": 7}) == "7"
