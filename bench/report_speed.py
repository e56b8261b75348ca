"""Report speed on a 100,000-node profile: time and size to write the HTML report, the
SVG flame graph and pprof, and time until headless Chromium has rendered the HTML,
beside snakeviz's page for the equivalent pstats file (the same profile exported by
`apiprof report --format pstats`).

    python bench/report_speed.py [--nodes N] [--repeat R]

snakeviz is installed from PyPI into its own environment (build/bench-snakeviz), never
into apiprof's. Prints an aligned table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))

from apiprof import _core  # noqa: E402
from cdp import Browser, CDPError  # noqa: E402
from profiles import big_spec, write  # noqa: E402

PEER_VENV = REPO / "build" / "bench-snakeviz"


def snakeviz_bin() -> Path:
    exe = PEER_VENV / "bin" / "snakeviz"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "snakeviz"], check=True)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_write(src: Path, fmt: str, out: Path, repeat: int) -> tuple[float, int]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _core.write_report(str(src), fmt, str(out), None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out.stat().st_size


def time_render(browser: Browser, url: str, ready: str, repeat: int,
                timeout: float = 60.0) -> float | None:
    """Median seconds from navigation to `ready` being true (polled every 20 ms); None
    when the page had not rendered after `timeout` seconds."""
    times = []
    for _ in range(repeat):
        page = browser.open("about:blank")
        t0 = time.monotonic()
        page.navigate(url)
        try:
            page.wait_for(ready, timeout=timeout)
        except CDPError:
            page.send("Page.close")
            return None
        times.append(time.monotonic() - t0)
        errors = page.errors
        if errors:
            raise SystemExit(f"{url}: page errors: {errors[:3]}")
        page.send("Page.close")
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-timeout", type=float, default=60.0,
                    help="give up on snakeviz's page after this many seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        src = write(big_spec(args.nodes), tmp / "big.apiprof")
        rows = []
        results: dict[str, float | int] = {"nodes": args.nodes}
        for fmt, name in (("html", "big.html"), ("svg", "big.svg"), ("pprof", "big.pb.gz")):
            secs, size = time_write(src, fmt, tmp / name, args.repeat)
            rows.append((f"apiprof write {fmt}", f"{secs * 1000:.0f} ms", f"{size / 1e6:.2f} MB"))
            results[f"write_{fmt}_s"] = round(secs, 4)
            results[f"{fmt}_bytes"] = size
        pstats_path = tmp / "big.pstats"
        _core.write_report(str(src), "pstats", str(pstats_path), None)
        sv = snakeviz_bin()
        port = free_port()
        server = subprocess.Popen([str(sv), "-s", "-H", "127.0.0.1", "-p", str(port),
                                   str(pstats_path)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            with Browser(tmp / "chromium") as browser:
                ours = time_render(browser, (tmp / "big.html").as_uri(),
                                   "document.body && document.body.dataset.ready === '1'",
                                   args.repeat)
                deadline = time.monotonic() + 30
                url = f"http://127.0.0.1:{port}/snakeviz/{pstats_path}"
                while time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", port), 1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                # snakeviz has rendered when its icicle has frames and its table rows.
                theirs = time_render(browser, url,
                                     "document.querySelectorAll('#chart rect').length > 10 && "
                                     "document.querySelectorAll('#pstats-table tbody tr')"
                                     ".length > 0", args.repeat, args.peer_timeout)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(10)
        assert ours is not None, "the apiprof report did not render"
        rows.append(("apiprof HTML rendered in Chromium", f"{ours * 1000:.0f} ms",
                     f"{os.path.getsize(tmp / 'big.html') / 1e6:.2f} MB"))
        rows.append(("snakeviz page rendered in Chromium",
                     f"{theirs * 1000:.0f} ms" if theirs else f">{args.peer_timeout:.0f} s",
                     f"{pstats_path.stat().st_size / 1e6:.2f} MB pstats"))
        results.update(render_apiprof_s=round(ours, 3),
                       render_snakeviz_s=round(theirs, 3) if theirs else None,
                       render_ratio_snakeviz_over_apiprof=round(theirs / ours, 2) if theirs
                       else f">{args.peer_timeout / ours:.0f}")
    w = max(len(r[0]) for r in rows)
    print(f"report of a {args.nodes:,}-node profile (median of {args.repeat})")
    print(f"{'what':<{w}}  {'time':>9}  size")
    for what, t, size in rows:
        print(f"{what:<{w}}  {t:>9}  {size}")
    print(f"snakeviz / apiprof render time: {results['render_ratio_snakeviz_over_apiprof']}x"
          + ("" if theirs else f" (snakeviz had not rendered after {args.peer_timeout:.0f} s)"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
