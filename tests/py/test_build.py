"""Building apiprof for a free-threaded CPython is refused with one clear line, not built."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from helpers import REPO_ROOT

MESSAGE = "apiprof does not support free-threaded CPython"


def test_meson_refuses_a_free_threaded_interpreter(tmp_path: Path):
    # meson asks the interpreter for its sysconfig variables; this one answers as a
    # free-threaded build would (Py_GIL_DISABLED=1).
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import sysconfig\n"
        "_vars = sysconfig.get_config_vars\n"
        "def get_config_vars(*args):\n"
        "    v = _vars()\n"
        "    v['Py_GIL_DISABLED'] = 1\n"
        "    return [v.get(a) for a in args] if args else v\n"
        "sysconfig.get_config_vars = get_config_vars\n")
    meson = Path(sys.executable).parent / "meson"
    assert meson.exists(), "meson belongs in the test venv (requirements-dev.txt)"
    r = subprocess.run([str(meson), "setup", str(tmp_path / "build"), str(REPO_ROOT)],
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(fake)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert MESSAGE in r.stdout + r.stderr, r.stdout[-2000:]
    assert not (tmp_path / "build" / "build.ninja").exists()


def test_headers_refuse_a_free_threaded_build(tmp_path: Path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build apiprof"
    r = subprocess.run([cc, "-fsyntax-only", "-DPy_GIL_DISABLED=1",
                        f"-I{sysconfig.get_paths()['include']}", "-x", "c",
                        str(REPO_ROOT / "src" / "ext" / "ext.h")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert MESSAGE in r.stderr


def test_tests_pass_in_a_checkout_whose_path_contains_apiprof(tmp_path):
    """The tests that check that apiprof's own code is not in a profile name its package,
    not any path with "apiprof" in it: a checkout at .../apiprof/ passes them too."""
    checkout = tmp_path / "src" / "apiprof"
    shutil.copytree(REPO_ROOT / "tests", checkout / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    shutil.copy(REPO_ROOT / "pyproject.toml", checkout)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/py/test_trace.py::test_exact_call_counts_on_a_known_graph",
         "tests/py/test_request_profiles.py::test_on_demand_profile_needs_the_right_token"],
        cwd=checkout, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
