"""`apiprof investigate`: the workflow in one command on real apps under real uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from apiprof import _core
from helpers import REPO_ROOT, SHOP_DIR

APIPROF = Path(sys.executable).with_name("apiprof")
APPS = REPO_ROOT / "tests" / "py" / "apps"


def investigate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(APIPROF), "investigate", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_investigate_the_shop(tmp_path: Path):
    out = tmp_path / "inv"
    # The shop's traffic with the recommendations weighted up: in 2 s of load on a busy
    # machine (or under ASan) the slow-route ranking must not hang on a handful of them.
    traffic = tmp_path / "traffic.txt"
    traffic.write_text((SHOP_DIR / "traffic.txt").read_text().replace(
        "1 /products/42/recommendations", "3 /products/42/recommendations"))
    r = investigate("--app", "shop.app:app", "--app-dir", str(SHOP_DIR), "--urls",
                    str(traffic), "-d", "2", "--warmup", "0.5", "-c", "4",
                    "--top", "3", "-o", str(out), env={"SHOP_DB": str(tmp_path / "shop.db")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "investigate: pass 1:" in r.stderr and "investigate: pass 2:" in r.stderr
    for name in ("report.html", "report.json", "bench.json", "bench.apiprof", "findings.txt",
                 "findings.json", "lines.apiprof", "lines.txt"):
        assert (out / name).is_file(), name
    findings = json.loads((out / "findings.json").read_text())
    kinds = {(f["kind"], f["route"]) for f in findings}
    assert ("blocking_call", "POST /login") in kinds
    # Pass 1 captured every statement and allocation (the defaults).
    assert ("n_plus_one", "GET /orders/recent") in kinds
    meta = json.loads(bytes(_core.load(str(out / "bench.apiprof")).json()))["meta"]
    assert meta["memory"] == "full" and int(meta["memory_live_bytes"]) > 0
    assert "full memory, database statements" in r.stderr
    assert ("slow_route", "GET /products/{product_id}/recommendations") in kinds
    # The second pass: the hot line of the recommendation loop, from the line profiler.
    (line,) = [f for f in findings if f["kind"] == "hot_line"
               and f["route"] == "GET /products/{product_id}/recommendations"]
    assert line["file"].endswith("shop/recommend.py") and line["line"] == 51
    assert "line 51 of similar" in r.stdout and f"HTML report: {out / 'report.html'}" in r.stdout
    # The report's JSON carries the warm phase's findings.
    doc = json.loads((out / "report.json").read_text())
    assert {t["labels"]["phase"] for t in doc["threads"]} == {"warm"}
    assert [f["message"] for f in doc["findings"]] == [f["message"] for f in findings]
    # The HTML report opens on them, the hot line of the second pass included.
    html = (out / "report.html").read_text()
    assert '"kind": "hot_line"' in html and "line 51 of similar" in html


def test_investigate_discovers_routes_from_openapi(tmp_path: Path):
    out = tmp_path / "inv"
    r = investigate("--app", "label_app:app", "--app-dir", str(APPS), "-d", "1", "--warmup",
                    "0", "-c", "2", "--top", "0", "--sweep", "10:20:10", "-o", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    urls = (out / "urls.txt").read_text().split()
    assert "/items/1" in urls and "/health" in urls and "/sync/1" in urls
    bench = json.loads((out / "bench.json").read_text())
    routes = {r["name"] for r in bench["routes"]["warm"]}
    assert "GET /items/{item_id}" in routes
    # pass 3, the sweep: its steps, its conclusion printed, its chart beside it
    assert "investigate: pass 3: load sweep 10:20:10" in r.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert [s["rate"] for s in sweep["sweep"]["steps"]] == [10, 20]
    assert "GET /items/{item_id}" in {row["name"] for row in sweep["sweep"]["steps"][0]["routes"]}
    assert "the top of the range (20 req/s)" in r.stdout
    assert (out / "sweep.svg").is_file() and (out / "sweep.apiprof").is_file()
    assert "sweep.json, sweep.html" in r.stdout


def test_investigate_bad_input_is_one_line(tmp_path: Path):
    for args, said in (
        (["--app", "nocolon"], "module:attribute"),
        (["--app", "a:b", "--app-dir", str(tmp_path / "none")], "not a directory"),
        (["--app", "a:b", "--app-dir", str(tmp_path), "--urls", str(tmp_path / "none.txt")],
         "no such file"),
        (["--app", "missing_mod:app", "--app-dir", str(tmp_path)], "OpenAPI"),
        (["--app", "a:b", "--app-dir", str(tmp_path), "--urls", str(APPS / "../../../README.md"),
          "--sweep", "9:1:1"], "--sweep wants"),
    ):
        r = investigate(*args, "-o", str(tmp_path / "o"))
        assert r.returncode == 2 and said in r.stderr and r.stderr.count("\n") == 1, r.stderr
