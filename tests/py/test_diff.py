"""apiprof diff: two real profiles of a small FastAPI app, before and after a planted
slowdown of one function (the edit also moves every function down a few lines), compared
in every format; bad input; a hostile function name escaped everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import apiprof
import httpx
import pytest
from cdp import Browser
from conftest import free_port
from helpers import serve_profiled
from profiles import APP, MAIN, fr, write

APIPROF = Path(sys.executable).with_name("apiprof")

APP_SOURCE = '''\
from fastapi import FastAPI

app = FastAPI()
{shift}

def tax(n: int) -> int:
    return sum(i % 7 for i in range(n))


def price(n: int) -> int:
    total = n * 3
{slowdown}    return total


@app.get("/health")
async def health() -> dict[str, str]:
    return {{"status": "ok"}}


@app.get("/quote/{{n}}")
async def quote(n: int) -> dict[str, int]:
    return {{"price": price(n), "tax": tax(n)}}
'''
# The planted slowdown: a pure-Python loop in price's own body (its self time).
SLOWDOWN = "    for i in range(300_000):\n        total += i & 1\n"
REQUESTS = 12


def drive(client: httpx.Client) -> None:
    for i in range(REQUESTS):
        assert client.get(f"/quote/{200 + i}").status_code == 200


def profile_app(directory: Path, out: Path, slow: bool) -> Path:
    """`apiprof run` of the quote app (the slow version or not) in directory, the same
    file each time, driven by REQUESTS quotes."""
    (directory / "quoteapp.py").write_text(APP_SOURCE.format(
        shift="\n# moved down\n# by the edit\n" if slow else "", slowdown=SLOWDOWN if slow else ""))
    port = free_port()
    serve_profiled([str(APIPROF), "run", "-q", "-o", str(out), "-m", "uvicorn", "quoteapp:app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   directory, {}, port, directory / f"{out.stem}.log", drive)
    return out


@pytest.fixture(scope="module")
def before_after(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("quote")
    return profile_app(d, d / "a.apiprof", False), profile_app(d, d / "b.apiprof", True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(APIPROF), "diff", *args], capture_output=True, text=True,
                          timeout=60)


def test_python_api_names_the_slowed_function(before_after):
    a, b = before_after
    d = apiprof.diff(a, b)
    assert (d.metric, d.key, d.per) == ("wall", "self_ns", "request")
    assert d.requests_a == d.requests_b == REQUESTS + 1   # the quotes and the health check
    top = d.top()
    assert top is not None and top.qualname == "price" and top.status == "changed"
    assert top.file.endswith("quoteapp.py")
    assert top.delta("self_ns") > 0 and top.b["calls"] == top.a["calls"]
    # The edit moved every function: matched by name, nothing of the app is new or gone.
    names = {f.qualname for f in d.functions if f.file.endswith("quoteapp.py")}
    assert {"price", "tax", "quote"} <= names
    assert not [f for f in d.new + d.vanished if f.file.endswith("quoteapp.py")]


def test_text_and_json_put_the_slowed_function_first(before_after):
    a, b = before_after
    r = cli(str(a), str(b))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "per request (A 13 requests, B 13)" in lines[1] and "metric wall (self_ns)" in lines[1]
    first = lines[lines.index(next(x for x in lines if x.startswith("---"))) + 1]
    # the first row (right-aligned: a wider figure below may pad it) is the slowed one
    assert first.lstrip().startswith("+") and first.endswith(f"price ({a.parent}/quoteapp.py)")
    r = cli(str(a), str(b), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["per"] == "request" and doc["functions"][0]["qualname"] == "price"
    assert doc["functions"][0]["delta"] == pytest.approx(
        doc["functions"][0]["b"]["self_ns"] - doc["functions"][0]["a"]["self_ns"], rel=1e-12)
    assert doc["requests"] == [REQUESTS + 1, REQUESTS + 1]
    # In total: every thread's work, the figures undivided (price ran once a quote).
    doc = json.loads(cli(str(a), str(b), "--format", "json", "--per", "total").stdout)
    (price,) = [f for f in doc["functions"] if f["qualname"] == "price"]
    assert doc["per"] == "total" and price["a"]["calls"] == price["b"]["calls"] == REQUESTS
    # --function keeps what it names; a filter matching nothing says so.
    r = cli(str(a), str(b), "--format", "json", "--function", "tax")
    assert {f["qualname"] for f in json.loads(r.stdout)["functions"]} >= {"tax"}
    assert all("tax" in f["qualname"] or "tax" in f["file"]
               for f in json.loads(r.stdout)["functions"])
    r = cli(str(a), str(b), "--function", "no-such-function")
    assert r.returncode == 2 and r.stderr.strip() == (
        "apiprof diff: no function of either profile matches --function 'no-such-function'")


def test_svg_parses_and_colours_the_slowed_path(before_after, tmp_path):
    a, b = before_after
    out = tmp_path / "diff.svg"
    r = cli(str(a), str(b), "-o", str(out))
    assert r.returncode == 0, r.stderr
    root = ET.parse(out).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    frames = root.findall(".//s:g[@class='f']", ns)
    price = [g for g in frames if g.find("s:title", ns).text.startswith("price (")]
    assert price, "price is not drawn"
    # Slower in B: a red fill (red channel above the others).
    fill = price[0].find("s:rect", ns).get("fill")
    rgb = [int(v) for v in fill[4:-1].split(",")]
    assert rgb[0] == 245 and rgb[1] < 120 and rgb[2] < 120, fill
    assert "per request A" in price[0].find("s:title", ns).text


def test_html_shows_the_diff_flame_graph(before_after, tmp_path):
    a, b = before_after
    out = tmp_path / "diff.html"
    r = cli(str(a), str(b), "-o", str(out))
    assert r.returncode == 0, r.stderr
    with Browser(tmp_path / "chromium") as browser:
        page = browser.open(out.as_uri())
        page.wait_for("window.apiprofFlame && window.apiprofFlame.frames.length > 0")
        assert page.errors == []
        assert page.eval("document.getElementById('answer').textContent").startswith(
            "Largest change: price")
        # The flame graph is laid out and price's frame is visible, red.
        box = page.eval("""(() => { const g = [...document.querySelectorAll('g.f')].find(
            e => e.querySelector('title').textContent.startsWith('price (')),
            r = g.querySelector('rect').getBoundingClientRect();
            return [r.width, r.height, g.querySelector('rect').getAttribute('fill')]; })()""")
        assert box[0] > 1 and box[1] > 5 and box[2].startswith("rgb(245,")
        page.screenshot(tmp_path / "diff.png")


@pytest.mark.parametrize("args, message", [
    (["{a}", "{d}/missing.apiprof"], "cannot read {d}/missing.apiprof: No such file or directory"),
    (["{a}", "{d}/junk"], "not a readable apiprof profile: {d}/junk: not an apiprof profile"),
    (["{a}", "{b}", "--metric", "bogus"],
     "unknown metric 'bogus' (wall, cpu, await, memory or alloc, live, samples)"),
    (["{a}", "{b}", "--per", "request"],
     "per request needs requests in both profiles (A has none)"),
    (["{a}", "{other}"], "the two profiles have no function in common"),
    (["{a}", "{b}", "--phase-a", "warm"], "{a} has no phase 'warm' (it has no phases)"),
    (["{a}", "{b}", "-o", "{d}/d.pb.gz"],
     "cannot tell the format from '{d}/d.pb.gz': pass --format (text, json, html, svg)"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    a = write({"meta": {}, "trees": [{"labels": {}, "nodes": [([MAIN], {"self_ns": 5})]}]},
              tmp_path / "a.apiprof")
    b = write({"meta": {}, "trees": [{"labels": {}, "nodes": [([MAIN], {"self_ns": 9})]}]},
              tmp_path / "b.apiprof")
    other = write({"meta": {}, "trees": [{"labels": {}, "nodes": [
        ([fr("elsewhere", "/x.py")], {"self_ns": 9})]}]}, tmp_path / "o.apiprof")
    (tmp_path / "junk").write_text("not a profile\n")
    fmt = {"a": a, "b": b, "other": other, "d": tmp_path}
    r = cli(*[x.format(**fmt) for x in args])
    assert r.returncode == 2
    assert r.stderr == f"apiprof diff: {message.format(**fmt)}\n"


def test_two_phases_of_one_file(tmp_path):
    """--phase-a/--phase-b: a low step against a high one of the same profile (the steps
    of bench --sweep); the function that grew per request comes first."""
    queue = fr("wait_for_slot", "/app/pool.py")

    def tree(phase: str, calls: int, waited: int) -> dict:
        return {"labels": {"phase": phase, "route": "GET /x"}, "nodes": [
            ([MAIN], {"calls": calls, "self_ns": 1000 * calls}),
            ([MAIN, queue], {"calls": calls, "self_ns": waited})]}

    both = write({"meta": {}, "trees": [tree("step-1", 10, 10_000), tree("step-4", 40, 4_000_000)]},
                 tmp_path / "sweep.apiprof")
    r = cli(str(both), str(both), "--phase-a", "step-1", "--phase-b", "step-4", "-f", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["functions"][0]["qualname"] == "wait_for_slot"
    text = cli(str(both), str(both), "--phase-a", "step-1", "--phase-b", "step-4").stdout
    assert "(phase step-1)" in text and "(phase step-4)" in text


HOSTILE = "<img src=x onerror=alert(1)>&\x1b[31m]]>"


def test_hostile_names_are_escaped_in_every_format(tmp_path):
    def spec(self_ns: int) -> dict:
        return {"meta": {}, "trees": [{"labels": {}, "nodes": [
            ([MAIN], {"self_ns": 5}), ([MAIN, fr(HOSTILE, APP, 3)], {"self_ns": self_ns})]}]}

    a, b = write(spec(10), tmp_path / "a.apiprof"), write(spec(50), tmp_path / "b.apiprof")
    for fmt in ("text", "json", "html", "svg"):
        r = cli(str(a), str(b), "--format", fmt)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout and "onerror=alert(1)" in r.stdout, fmt
        if fmt in ("html", "svg"):   # markup: the name is text, never an element
            assert "<img" not in r.stdout, fmt
    assert "\\x1b[31m" in cli(str(a), str(b)).stdout   # text: written as an escape
    doc = json.loads(cli(str(a), str(b), "--format", "json").stdout)
    assert doc["functions"][0]["qualname"] == HOSTILE
    ET.fromstring(cli(str(a), str(b), "--format", "svg").stdout)
