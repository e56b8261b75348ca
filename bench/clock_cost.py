#!/usr/bin/env python3
"""Compile bench/clock_cost.c with gcc into build/ and run it: ns per read of each clock."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "gcc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra",
        f"-I{ROOT / 'src' / 'core'}",
        str(ROOT / "bench" / "clock_cost.c"),
        str(ROOT / "src" / "core" / "ap_clock.c"),
        str(ROOT / "src" / "core" / "ap_err.c"),
        "-lpthread", "-o", str(out),
    ]
    subprocess.run(cmd, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7, help="rounds per clock (1..101)")
    args = parser.parse_args()
    exe = ROOT / "build" / "clock_cost"
    build(exe)
    return subprocess.run([str(exe), "--rounds", str(args.rounds)]).returncode


if __name__ == "__main__":
    sys.exit(main())
