"""gqemu-img convert against the real qemu-img convert on the same inputs:
the same content (qemu-img compare), the same allocated extents in the
target (qemu-img map --output=json of both targets; st_blocks of raw
targets within a page), the same ``-p`` output and the same errors.

Sources: a qcow2 with unallocated ranges, zero clusters and data clusters
holding zero 4k blocks; a raw file with holes; an overlay on a backing
file.  Targets: fresh raw and qcow2 (``-S`` default, 0, 8k, 64k, 512,
``-c``, ``-W``, ``-m``), ``-n`` onto targets full of data, ``-B``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)


def ok(*cmd, cwd=None) -> str:
    p = run(*cmd, cwd=cwd)
    assert p.returncode == 0, "%s: %s%s" % (cmd, p.stdout, p.stderr)
    return p.stdout


@pytest.fixture(scope="module")
def srcs(tmp_path_factory, qemu_img, qemu_io) -> Path:
    d = tmp_path_factory.mktemp("convert")
    qi, qio = qemu_img, qemu_io
    ok(qi, "create", "-q", "-f", "qcow2", d / "m.qcow2", "64M")
    ok(qio, "-c", "write -P 1 0 64k", "-c", "write -z 8k 4k", "-c", "write -z 20k 8k",
       "-c", "write -P 2 1M 3k", "-c", "write -P 3 2M 512", "-c", "write -P 4 2050k 1k",
       "-c", "write -z 4M 1M", "-c", "write -P 5 5M 64k", "-c", "write -z 5M 2k",
       "-c", "write -P 6 10M 4M", "-c", "write -z 11M 8k", "-c", "write -z 12M 32k",
       "-c", "write -P 7 63M 1M", d / "m.qcow2")
    h = d / "h.raw"                         # a raw file with holes and written zeroes
    with open(h, "wb") as f:
        f.truncate(32 * MiB)
        f.seek(5000)
        f.write(b"abc")
        f.seek(2 * MiB)
        f.write(os.urandom(100 * 1024))
        f.seek(8 * MiB)
        f.write(bytes(64 * 1024))
        f.seek(20 * MiB + 700)
        f.write(os.urandom(3000))
    ok(qi, "create", "-q", "-f", "qcow2", d / "base.qcow2", "32M")
    ok(qio, "-c", "write -P 1 0 8M", "-c", "write -P 2 16M 1M", d / "base.qcow2")
    ok(qi, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", d / "ov.qcow2",
       "48M")
    ok(qio, "-c", "write -P 3 1M 64k", "-c", "write -z 2M 64k", "-c", "write -P 0 4M 64k",
       "-c", "write -P 4 40M 1M", "-c", "write -z 44M 1M", d / "ov.qcow2")
    with open(d / "full.raw", "wb") as f:       # -n targets that hold data everywhere
        f.write(os.urandom(64 * MiB))
    ok(qi, "create", "-q", "-f", "qcow2", d / "full.qcow2", "64M")
    ok(qio, "-c", "write -P 0x55 0 64M", d / "full.qcow2")
    return d


def gqemu_img(*args, cwd=None) -> tuple[int, str, str]:
    """gqemu-img in-process, named qemu-img (no interpreter start per case)."""
    mp = pytest.MonkeyPatch()
    out, err = _Capture(), _Capture()
    try:
        mp.setattr(sys, "argv", ["qemu-img"])
        mp.setattr(sys, "stdout", out)
        mp.setattr(sys, "stderr", err)
        if cwd is not None:
            mp.chdir(cwd)
        rc = gimg.main([str(a) for a in args])
    finally:
        mp.undo()
    return rc, out.getvalue(), err.getvalue()


class _Capture:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)


def _map(qemu_img: str, path: Path, fmt: str) -> str:
    return ok(qemu_img, "map", "-f", fmt, "--output=json", path)


def _both(qemu_img: str, srcs: Path, tmp_path: Path, src: str, args: list[str],
          template: str = "") -> tuple[Path, Path]:
    q, g = tmp_path / "q.out", tmp_path / "g.out"
    if template:
        for t in (q, g):
            ok("cp", "--sparse=always", srcs / template, t)
    ok(qemu_img, "convert", *args, srcs / src, q)
    rc, out, err = gqemu_img("convert", *args, srcs / src, g)
    assert (rc, out, err) == (0, "", "")
    return q, g


def _same(qemu_img: str, q: Path, g: Path, fmt: str) -> None:
    assert ok(qemu_img, "compare", "-f", fmt, "-F", fmt, q, g) == "Images are identical.\n"
    assert _map(qemu_img, g, fmt) == _map(qemu_img, q, fmt)
    assert os.path.getsize(g) == os.path.getsize(q)
    if fmt == "raw":
        assert abs(os.stat(g).st_blocks - os.stat(q).st_blocks) <= 8      # a 4k page


CASES = [
    ("m.qcow2", "raw", []), ("m.qcow2", "raw", ["-S", "0"]), ("m.qcow2", "raw", ["-S", "8k"]),
    ("m.qcow2", "raw", ["-S", "64k"]), ("m.qcow2", "raw", ["-S", "512", "-m", "3"]),
    ("m.qcow2", "raw", ["-W"]), ("m.qcow2", "qcow2", []), ("m.qcow2", "qcow2", ["-S", "0"]),
    ("m.qcow2", "qcow2", ["-S", "64k"]), ("m.qcow2", "qcow2", ["-c"]),
    ("h.raw", "raw", []), ("h.raw", "raw", ["-S", "16k"]), ("h.raw", "qcow2", []),
    ("ov.qcow2", "raw", []), ("ov.qcow2", "qcow2", []),
    ("ov.qcow2", "qcow2", ["-B", "base.qcow2", "-F", "qcow2"]),
    ("ov.qcow2", "qcow2", ["-B", "base.qcow2", "-F", "qcow2", "-S", "0"]),
]


@pytest.mark.parametrize("src,fmt,args", CASES, ids=["%s-%s%s" % (s, f, "".join(a))
                                                     for s, f, a in CASES])
def test_convert_allocates_as_qemu_img(qemu_img, srcs, tmp_path, src, fmt, args):
    if "-B" in args:                         # the backing name is relative to the target
        ok("cp", srcs / "base.qcow2", tmp_path / "base.qcow2")
    q, g = _both(qemu_img, srcs, tmp_path, src, ["-O", fmt] + args)
    _same(qemu_img, q, g, fmt)


@pytest.mark.parametrize("src,fmt,args,template", [
    ("m.qcow2", "raw", [], "full.raw"), ("m.qcow2", "raw", ["-S", "64k"], "full.raw"),
    ("h.raw", "raw", [], "full.raw"), ("m.qcow2", "raw", ["-S", "0"], "full.raw"),
    ("m.qcow2", "qcow2", [], "full.qcow2"), ("h.raw", "qcow2", ["-S", "0"], "full.qcow2"),
])
def test_convert_n_onto_data_writes_zeroes(qemu_img, srcs, tmp_path, src, fmt, args, template):
    """-n: the target may hold data, so zero and unallocated source ranges
    must be zeroed there too (qemu-img punches holes into a raw file; on
    qcow2 only the map is compared: the qcow2 driver does not yet free the
    host clusters of zeroed ranges, so the file stays bigger)."""
    q, g = _both(qemu_img, srcs, tmp_path, src, ["-n", "-O", fmt] + args, template)
    _same(qemu_img, q, g, fmt)


def test_convert_progress_same_as_qemu_img(qemu_img, srcs, tmp_path):
    """``-p``: the same lines, CRs and all (compared as bytes)."""
    for src, args in (("m.qcow2", []), ("m.qcow2", ["-S", "0"]), ("h.raw", []),
                      ("nope", [])):
        q = subprocess.run([qemu_img, "convert", "-p", "-O", "raw"] + args
                           + [str(srcs / src), str(tmp_path / "q")], capture_output=True)
        g = gqemu_img("convert", "-p", "-O", "raw", *args, srcs / src, tmp_path / "g")
        assert g[:2] == (q.returncode, q.stdout.decode())
        assert "\r" in g[1]


def test_convert_empty_image(qemu_img, tmp_path):
    """Every worker finishes without yielding (nothing to read or write)."""
    ok(qemu_img, "create", "-q", "-f", "qcow2", tmp_path / "e.qcow2", "64M")
    ok(qemu_img, "convert", "-O", "raw", tmp_path / "e.qcow2", tmp_path / "q.raw")
    assert gqemu_img("convert", "-O", "raw", tmp_path / "e.qcow2", tmp_path / "g.raw")[0] == 0
    _same(qemu_img, tmp_path / "q.raw", tmp_path / "g.raw", "raw")


@pytest.mark.parametrize("args", [
    ["-S", "1000"], ["-S", "abc"], ["-S", "99E"], ["-S", "32M"], ["-m", "0"], ["-m", "17"],
    ["-m", "x"], ["-n", "-o", "a=b"], ["--target-is-zero"], ["-c", "-O", "raw"],
    ["-O", "raw", "-B", "base.qcow2"], ["-O", "qcow2", "-B", "base.qcow2"],
    ["-O", "qcow2", "-o", "cluster_size=abc"], ["-O", "qcow2", "-o", "bogus=1"],
    ["-O", "qcow2", "-o", "cluster_size=1000"], ["-S"], ["--bogus"], ["-n"],
])
def test_convert_errors_same_as_qemu_img(qemu_img, srcs, tmp_path, args):
    p = run(qemu_img, "convert", *args, srcs / "m.qcow2", tmp_path / "x.out", cwd=tmp_path)
    if os.path.exists(tmp_path / "x.out"):
        os.unlink(tmp_path / "x.out")
    got = gqemu_img("convert", *args, srcs / "m.qcow2", tmp_path / "x.out", cwd=tmp_path)
    assert got == (p.returncode, p.stdout, p.stderr)


def test_convert_read_error_same_as_qemu_img(qemu_img, srcs, tmp_path):
    """A failing source read (blkdebug) stops the copy with qemu-img's line."""
    conf = tmp_path / "bd.conf"
    conf.write_text('[inject-error]\nevent = "read_aio"\nerrno = "5"\nsector = "4096"\n')
    for src, fmt in (("m.qcow2", "qcow2"), ("h.raw", "raw")):
        args = ["convert", "-f", fmt, "-O", "raw", "blkdebug:%s:%s" % (conf, srcs / src),
                tmp_path / "o.raw"]
        p = run(qemu_img, *args)
        assert gqemu_img(*args) == (p.returncode, p.stdout, p.stderr) and p.returncode == 1
