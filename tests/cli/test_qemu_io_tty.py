"""gqemu-io on a terminal: the ``NAME> `` prompt, readline history (the up
arrow repeats a command) and Ctrl-D, checked against the real qemu-io under
the same pseudo-terminal session.  Also: start-up imports nothing heavy."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qemu_io_corpus_runner as runner  # tests/qemu-io/runner.py, via conftest


def _read_until(fd: int, pattern: bytes, buf: bytearray, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while pattern not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return False
        if not chunk:
            return False
        buf += chunk
    return True


def _session(argv: list[str], executable: str, cwd: Path) -> tuple[int, str]:
    """prompt; 'read -P 0 0 512'; up-arrow + Enter; Ctrl-D."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="dumb", LC_ALL="C")
    p = subprocess.Popen(argv, executable=executable, cwd=cwd, stdin=slave,
                         stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    buf = bytearray()
    try:
        assert _read_until(master, b"qemu-io> ", buf), bytes(buf)
        os.write(master, b"read -P 0 0 512\r")
        assert _read_until(master, b"ops/sec)", buf), bytes(buf)
        os.write(master, b"\x1b[A\r")
        deadline = time.monotonic() + 20
        while buf.count(b"ops/sec)") < 2 and time.monotonic() < deadline:
            _read_until(master, b"\x00never", buf, 0.2)
        os.write(master, b"\x04")
        rc = p.wait(timeout=20)
        _read_until(master, b"\x00never", buf, 0.2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", buf.decode("latin-1"))
    return rc, text.replace("\r", "")


@pytest.mark.timeout(120)
def test_terminal_session_like_qemu_io(qemu_io: str, qemu_img: str,
                                       tmp_path: Path) -> None:
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(tmp_path / "t.img"),
                    "64k"], check=True)
    args = ["-f", "raw", "t.img"]
    results = {}
    for tag, exe, argv in (
            ("qemu", qemu_io, ["qemu-io"] + args),
            ("gqemu", sys.executable, [sys.executable, "-c", runner.GQEMU_IO] + args)):
        results[tag] = _session(argv, exe, tmp_path)
    for tag, (rc, text) in results.items():
        assert rc == 0, (tag, text)
        assert text.startswith("qemu-io> "), (tag, text)
        assert text.count("read 512/512 bytes at offset 0") == 2, (tag, text)
        assert "Pattern verification failed" not in text, (tag, text)
        assert "Traceback" not in text
        assert text.rstrip(" ").endswith("\n"), (tag, text)   # newline on Ctrl-D


def test_prompt_named_after_argv0(tmp_path: Path) -> None:
    img = tmp_path / "t.img"
    img.write_bytes(bytes(4096))
    p = subprocess.run([sys.executable, "-c",
                        "import sys; sys.argv[0] = '/some/where/myio'; "
                        "from gqemu.cli.qemu_io import main; sys.exit(main())",
                        "-f", "raw", str(img)], input="bogus\nread 0 1\n",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stdout.startswith("myio> myio> read 1/1 bytes at offset 0\n")
    assert p.stdout.endswith("myio> ")
    assert p.stderr == 'command "bogus" not found\n'


@pytest.mark.parametrize("args", [["-h"], ["-V"], ["-x"], ["a", "b"],
                                  ["-t", "bogus", "x.img"]])
def test_option_errors_and_help_import_no_block_layer(args: list[str]) -> None:
    """-h, -V and command-line errors answer without loading gqemu.block
    (and so gevent): the start-up cost of a one-shot run is Python's own."""
    code = ("import sys; sys.argv = ['gqemu-io'] + %r\n"
            "from gqemu.cli.qemu_io import main\n"
            "rc = main()\n"
            "assert 'gqemu.block' not in sys.modules, 'block imported'\n"
            "assert 'gevent' not in sys.modules, 'gevent imported'\n"
            "sys.exit(rc)" % (args,))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert "imported" not in p.stderr, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == (0 if args[0] in ("-h", "-V") else 1)
    if args[0] == "-h":
        assert p.stdout.startswith("Usage: gqemu-io [OPTIONS]... [-c STRING]... [file]")


def test_console_script_runs(tmp_path: Path, gqemu_io_exe: str) -> None:
    """The installed ``gqemu-io`` entry point (setup.cfg) works end to end."""
    exe = gqemu_io_exe
    img = tmp_path / "t.img"
    img.write_bytes(bytes(1024))
    p = subprocess.run([exe, "-f", "raw", "-c", "write -P 7 0 512",
                        "-c", "read -P 7 0 512", str(img)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert img.read_bytes()[:512] == b"\x07" * 512


def test_trace_option_like_qemu_io(qemu_io: str, tmp_path: Path) -> None:
    """-T PATTERN prints QEMU's log-backend lines on stderr."""
    img = tmp_path / "t.img"
    img.write_bytes(bytes(65536))
    args = ["-T", "blk_co_p*", "-f", "raw", "-c", "read 0 512", "-c", "write 512 512",
            "-c", "readv 4k 1k 1k", "t.img"]
    outs = []
    for exe, argv in ((qemu_io, ["qemu-io"] + args),
                      (sys.executable, [sys.executable, "-c", runner.GQEMU_IO] + args)):
        p = subprocess.run(argv, executable=exe, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        outs.append(re.sub(r"0x[0-9a-f]+ bs 0x[0-9a-f]+", "PTR", p.stderr))
    assert outs[1] == outs[0]
    assert outs[0].count("\n") == 3 and "blk_co_pwritev blk PTR offset 512" in outs[0]
