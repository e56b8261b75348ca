"""Line-level memory: `apiprof lines --memory` and `LineProfiler(memory=...)` give each line
the bytes allocated while it ran (callees included, as its time) and its net bytes
(allocated - freed), exact in full mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import apiprof
import pytest
from apiprof import _core

APIPROF = Path(sys.executable).with_name("apiprof")
SIZE = sys.getsizeof(bytearray(65536))   # object and buffer: the bytes of one bytearray
N = 1000


def churn():
    out = [None] * N
    for i in range(N):
        out[i] = bytearray(65536)  # ALLOC_LINE
    del out[::2]  # FREE_LINE
    return out


def caller():
    kept = churn()  # CALL_LINE
    return kept


def line_no(marker: str, text: str | None = None) -> int:
    lines = (text if text is not None else Path(__file__).read_text()).splitlines()
    return next(i for i, t in enumerate(lines, 1) if t.endswith(f"# {marker}"))


def row(rows, function: str, line: int) -> dict:
    (r,) = [r for r in rows if r["function"] == function and r["line"] == line]
    return r


def test_full_mode_gives_each_line_its_bytes_exactly():
    lp = apiprof.LineProfiler(churn, caller, memory="full")
    with lp:
        kept = caller()
    rows = lp.lines()
    alloc = row(rows, "churn", line_no("ALLOC_LINE"))
    # 1,000 bytearrays: two blocks each (object, buffer), none freed on that line
    assert (alloc["alloc_bytes"], alloc["alloc_count"]) == (N * SIZE, 2 * N)
    assert (alloc["freed_bytes"], alloc["net_bytes"]) == (0, N * SIZE)
    assert alloc["live_bytes"] == N // 2 * SIZE   # the half the caller keeps
    # the deleting line frees half of them (and anything it allocates itself)
    freed = row(rows, "churn", line_no("FREE_LINE"))
    assert freed["net_bytes"] == -(N // 2) * SIZE
    assert freed["freed_bytes"] - freed["alloc_bytes"] == N // 2 * SIZE
    # a line's figures include the profiled functions it calls, as its time does: what
    # the call kept is the half and the list
    call = row(rows, "caller", line_no("CALL_LINE"))
    assert call["alloc_bytes"] >= N * SIZE
    assert N // 2 * SIZE <= call["net_bytes"] <= N // 2 * SIZE + 16 * 1024
    assert lp.profile.meta["memory_attribution"] == "lines"
    del kept


def test_without_memory_lines_have_no_memory_figures():
    lp = apiprof.LineProfiler(churn)
    with lp:
        churn()
    assert all("net_bytes" not in r and "alloc_bytes" not in r for r in lp.lines())
    with pytest.raises(ValueError, match="memory"):
        apiprof.LineProfiler(churn, memory="all")


SCRIPT = """
N = 1000


@profile
def churn():
    out = [None] * N
    for i in range(N):
        out[i] = bytearray(65536)  # ALLOC_LINE
    del out[::2]  # FREE_LINE
    return out


kept = churn()
"""


def run_lines(tmp_path: Path, *options: str) -> tuple[str, dict]:
    script = tmp_path / "churn.py"
    script.write_text(SCRIPT)
    out = tmp_path / "churn.lines.apiprof"
    r = subprocess.run([str(APIPROF), "lines", *options, "-o", str(out), str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(_core.load(str(out)).json())
    return r.stderr + r.stdout, doc


def test_cli_lines_memory_shows_alloc_and_net_beside_time(tmp_path):
    text, doc = run_lines(tmp_path, "--memory")
    alloc = row(doc["lines"], "churn", line_no("ALLOC_LINE", SCRIPT))
    freed = row(doc["lines"], "churn", line_no("FREE_LINE", SCRIPT))
    assert (alloc["alloc_bytes"], alloc["net_bytes"]) == (N * SIZE, N * SIZE)
    assert freed["net_bytes"] == -(N // 2) * SIZE
    assert doc["meta"]["memory"] == "full"
    header = next(t for t in text.splitlines() if t.startswith("Line #"))
    assert header.split()[-4:] == ["Alloc", "Net", "Line", "Contents"]
    (alloc_text,) = [t for t in text.splitlines() if t.endswith("# ALLOC_LINE")]
    assert f"{N * SIZE / (1 << 20):.1f} MiB" in alloc_text
    assert f"+{N * SIZE / (1 << 20):.1f} MiB" in alloc_text
    (free_text,) = [t for t in text.splitlines() if t.endswith("# FREE_LINE")]
    assert f"-{N // 2 * SIZE / (1 << 20):.1f} MiB" in free_text


def test_cli_lines_memory_sampled_estimates_the_bytes(tmp_path):
    _, doc = run_lines(tmp_path, "--memory", "sampled", "--memory-rate", "64K",
                       "--memory-seed", "7")
    alloc = row(doc["lines"], "churn", line_no("ALLOC_LINE", SCRIPT))
    # p = 1 - exp(-65593/65536) per buffer: relative sd 2.4% over 1,000 of them
    assert abs(alloc["alloc_bytes"] - N * SIZE) <= 0.15 * N * SIZE
    assert doc["meta"]["memory"] == "sampled"


def test_cli_lines_without_memory_and_errors(tmp_path):
    text, doc = run_lines(tmp_path)
    assert "Alloc" not in text and "memory" not in doc["meta"]
    r = subprocess.run([str(APIPROF), "lines", "--memory", "all", "-m", "json.tool"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--memory" in r.stderr and "Traceback" not in r.stderr
