"""The apiprof command line: entry points, help, version, usage errors."""

import subprocess
import sys
from pathlib import Path

import apiprof

APIPROF = Path(sys.executable).with_name("apiprof")


def run(*args):
    return subprocess.run([str(APIPROF), *args], capture_output=True, text=True, timeout=60)


def test_version_and_module_entry_point():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"apiprof {apiprof.__version__}"
    m = subprocess.run([sys.executable, "-m", "apiprof", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert m.returncode == 0 and m.stdout == r.stdout


def test_no_command_prints_help_and_exits_2():
    r = run()
    assert r.returncode == 2 and "usage: apiprof" in r.stderr


def test_unknown_command_is_one_clear_error():
    r = run("no-such-command")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr and "Traceback" not in r.stderr
