"""One rule for what ``-o`` names, for every format of every command: a regular file is
replaced by a complete new one; a FIFO, a device or a symbolic link is written through
and stays what it was; a directory or a dangling link is refused with one line."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from profiles import shop_spec, write

APIPROF = Path(sys.executable).with_name("apiprof")
FORMATS = ["html", "svg", "dot", "speedscope", "pprof", "collapsed", "callgrind", "chrome",
           "text", "json", "pstats"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shop")
    return write(shop_spec(), d / "shop.apiprof")


def report(src: Path, out: Path | str, fmt: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(APIPROF), "report", str(src), "-f", fmt, "-o", str(out)],
                          capture_output=True, timeout=60)


def read_fifo_while(fifo: Path, cmd: list[str]) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run cmd while reading fifo (opened first, non-blocking: nothing here can hang)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    data = bytearray()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            select.select([fd], [], [], 0.05)
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            data += chunk
            if not chunk and proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), bytes(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fifo_is_written_through(shop, tmp_path, fmt):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    r, got = read_fifo_while(fifo, [str(APIPROF), "report", str(shop), "-f", fmt, "-o",
                                    str(fifo)])
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    expected = report(shop, tmp_path / f"plain.{fmt}", fmt)
    assert expected.returncode == 0
    assert got == (tmp_path / f"plain.{fmt}").read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlink_is_written_through_not_replaced(shop, tmp_path, fmt):
    target = tmp_path / "target"
    target.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(target)
    r = report(shop, link, fmt)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() not in (b"old", b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_regular_file_is_replaced_whole_with_its_mode(shop, tmp_path, fmt):
    out = tmp_path / "out"
    out.write_bytes(b"old")
    out.chmod(0o640)
    inode = out.stat().st_ino
    r = report(shop, out, fmt)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_ino != inode   # a new file renamed over the old one
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no temporary left


def test_failed_write_leaves_the_old_file(shop, tmp_path):
    out = tmp_path / "out.html"
    out.write_bytes(b"old")
    r = subprocess.run([str(APIPROF), "report", str(shop), "-o", str(out), "--metric", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]


@pytest.mark.parametrize("fmt", ["html", "text", "json"])
def test_directory_and_dangling_link_are_refused_on_one_line(shop, tmp_path, fmt):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for out, why in ((tmp_path, "is a directory"), (dangling, "symbolic link to nothing")):
        r = subprocess.run([str(APIPROF), "report", str(shop), "-f", fmt, "-o", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1 and why in r.stderr, r.stderr
    assert not (tmp_path / "nowhere").exists()


def test_dev_stdout_reaches_stdout(shop, tmp_path):
    for fmt in ("html", "json", "text"):
        r = subprocess.run([str(APIPROF), "report", str(shop), "-f", fmt, "-o", "/dev/stdout"],
                           capture_output=True)
        assert r.returncode == 0, r.stderr
        plain = subprocess.run([str(APIPROF), "report", str(shop), "-f", fmt],
                               capture_output=True)
        assert r.stdout == plain.stdout and r.stdout


def test_a_kill_during_a_profile_save_leaves_the_old_file_and_nothing_else(tmp_path):
    """The profile is written to an unnamed file: a process killed half-way through a save
    (SIGKILL, the OOM killer) leaves the previous profile and no stray temporary file."""
    old = tmp_path / "app.apiprof"
    old.write_bytes(b"the previous profile")
    code = (
        "import os, signal, sys\n"
        "from apiprof._output import output_path\n"
        "with output_path(sys.argv[1], unnamed=True) as p:\n"
        "    with open(p, 'wb') as f:\n"
        "        f.write(b'half a profile'); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code, str(old)], capture_output=True, timeout=60)
    assert r.returncode == -9, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.apiprof"]
    assert old.read_bytes() == b"the previous profile"
    # and a save that completes replaces it, keeping its permissions
    old.chmod(0o640)
    done = ("import sys\nfrom apiprof._output import output_path\n"
            "with output_path(sys.argv[1], unnamed=True) as p:\n"
            "    open(p, 'wb').write(b'new')\n")
    subprocess.run([sys.executable, "-c", done, str(old)], check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.apiprof"]
    assert old.read_bytes() == b"new" and stat.S_IMODE(old.stat().st_mode) == 0o640
