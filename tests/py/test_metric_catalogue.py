"""The metric catalogue as Python sees it, and write_report on a Profile object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apiprof import _core
from profiles import shop_spec, write


def test_catalogue_names_the_export_keys(tmp_path: Path) -> None:
    cat = _core.metrics()
    names = [m["name"] for m in cat]
    assert len(names) == len(set(names))
    # Every metric once, in table column order: an inclusive metric beside its self pair.
    assert sorted(m["index"] for m in cat) == list(range(len(cat)))
    assert names.index("cpu_total_ns") == names.index("cpu_ns") + 1
    by_name = {m["name"]: m for m in cat}
    assert by_name["total_ns"]["sum"] == "outermost" and by_name["self_ns"]["sum"] == "all"
    assert by_name["self_ns"]["view"] == "wall" and by_name["cpu_total_ns"]["unit"] == "nanoseconds"
    profile = _core.load(str(write(shop_spec(), tmp_path / "shop.apiprof")))
    node_keys = set(profile.nodes(0)[1])
    assert set(names) <= node_keys


def test_write_report_takes_a_profile(tmp_path: Path) -> None:
    profile = _core.load(str(write(shop_spec(), tmp_path / "shop.apiprof")))
    out = tmp_path / "one.json"
    assert _core.write_report(profile, "json", str(out), {"route": "GET /items"}) is False
    doc = json.loads(out.read_text())
    assert [t["labels"]["route"] for t in doc["threads"]] == ["GET /items"]
    with pytest.raises(LookupError, match="phase=cold"):
        _core.write_report(profile, "json", str(out), {"phase": "cold"})
    with pytest.raises(TypeError):
        _core.write_report(42, "json", str(out), None)
