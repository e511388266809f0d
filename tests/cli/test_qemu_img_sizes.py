"""One size parser (gqemu.cutils.qemu_strtosz), and in each context the
answer and the message the real tool gives: ``qemu-img create`` sizes
(cvtnum), ``-o cluster_size=`` / ``-o size=`` (QemuOpts' parse_option_size),
``convert -S``, and qemu-io's ``read 0 SIZE`` / ``write OFFSET``.  Every case
runs both tools and compares stdout, stderr and the exit status; gqemu runs
in-process (named qemu-img / qemu-io) to keep the table fast."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from gqemu.cli import qemu_img as gimg
from gqemu.cli import qemu_io as gio

pytestmark = pytest.mark.timeout(120)

SIZES = ["1_000", "0x10", "1.5k", "-1", "abc", "1e3", "16E", " 5", "5 ", "0x1k",
         "99999999999999999999", "8E", "0", "1.5", "64k", "0x10000", "", "1.5e3k",
         "0x1.8k", "1b", "2K", "1.k", ".5k", "0X10", "+5", "0x", "077", "1.5M", "4096.0001",
         "1 k", "7E", "16T", "0.5", "1_0k"]


def _gqemu_img(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    rc = gimg.main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _qemu_img(qemu_img: str, args: list[str], cwd) -> tuple[int, str, str]:
    p = subprocess.run([qemu_img] + args, capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def _both(qemu_img, monkeypatch, capsys, tmp_path, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    want = _qemu_img(qemu_img, args, tmp_path)
    for f in os.listdir(tmp_path):
        os.unlink(tmp_path / f)
    got = _gqemu_img(monkeypatch, capsys, args)
    assert got == want, args


@pytest.mark.parametrize("size", SIZES)
def test_create_size_same_as_qemu_img(qemu_img, monkeypatch, capsys, tmp_path, size):
    """``qemu-img create -f raw z SIZE`` (``--`` lets "-1" through getopt)."""
    _both(qemu_img, monkeypatch, capsys, tmp_path, ["create", "-f", "raw", "--", "z", size])


@pytest.mark.parametrize("size", SIZES)
def test_option_size_same_as_qemu_img(qemu_img, monkeypatch, capsys, tmp_path, size):
    """QemuOpts sizes: ``-o size=`` (raw) and ``-o cluster_size=`` (qcow2,
    when the value parses: the qcow2 range checks are not this parser's)."""
    if "," in size:
        pytest.skip("a comma ends the option")
    _both(qemu_img, monkeypatch, capsys, tmp_path, ["create", "-f", "raw", "-o", "size=" + size,
                                                    "z"])
    ret = _qemu_img(qemu_img, ["create", "-f", "qcow2", "-o", "cluster_size=" + size, "z",
                               "1M"], tmp_path)
    if "Parameter 'cluster_size'" in ret[2] or "out of range" in ret[2] or ret[0] == 0:
        _both(qemu_img, monkeypatch, capsys, tmp_path,
              ["create", "-f", "qcow2", "-o", "cluster_size=" + size, "z", "1M"])


@pytest.mark.parametrize("size", ["abc", "1_000", "99E", "1000", "4k", "16M", "32M", "-1",
                                  "0x1k", "1.5k"])
def test_convert_sparse_size_same_as_qemu_img(qemu_img, monkeypatch, capsys, tmp_path, size):
    src = tmp_path.parent / ("src-%s.raw" % tmp_path.name)
    src.write_bytes(b"\1" * 8192)
    _both(qemu_img, monkeypatch, capsys, tmp_path, ["convert", "-S", size, str(src), "o"])


def test_qemu_io_offsets_and_counts_same_as_qemu_io(qemu_io, tmp_path, capsys):
    img = tmp_path / "io.raw"
    img.write_bytes(bytes(1 << 20))
    args = []
    for size in SIZES:
        args += ["-c", "read 0 '%s'" % size, "-c", "write -P 1 '%s' 512" % size]
    p = subprocess.run([qemu_io, "-f", "raw"] + args + [str(img)], capture_output=True,
                       text=True)
    rc = gio.main(["qemu-io", "-f", "raw"] + args + [str(img)])
    cap = capsys.readouterr()
    timing = re.compile(r"\d+:\d+:\d+\.\d+ \([^)]*\)")       # elapsed time and rates
    assert (rc, timing.sub("T", cap.out), cap.err) == \
        (p.returncode, timing.sub("T", p.stdout), p.stderr)


@pytest.mark.parametrize("size", ["1_000", "0x10", "abc", "16E", "99999999999999999999", "0x1k",
                                  "4k", "1.5k", "", "-1"])
def test_block_option_size_same_as_qemu_io(qemu_io, monkeypatch, tmp_path, capsys, size):
    """A driver's size option (raw ``size=``) through the block layer's
    QemuOpts parser: qemu_opt_size."""
    img = tmp_path / "io.raw"
    img.write_bytes(bytes(1 << 20))
    spec = "driver=raw,size=%s,file.filename=%s" % (size, img)
    p = subprocess.run([qemu_io, "--image-opts", "-c", "length", spec], capture_output=True,
                       text=True)
    monkeypatch.setattr(sys, "argv", ["qemu-io"])
    rc = gio.main(["qemu-io", "--image-opts", "-c", "length", spec])
    cap = capsys.readouterr()
    assert (rc, cap.out, cap.err) == (p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize("args", [["-f", "raw", "-o", "size=4k", "z", "8k"],
                                  ["-f", "qcow2", "-o", "size=4k", "z", "8k"],
                                  ["-f", "raw", "-o", "size=abc", "z", "8k"],
                                  ["-f", "raw", "-o", "size=4k,size=2k", "z"]])
def test_size_twice_same_as_qemu_img(qemu_img, monkeypatch, capsys, tmp_path, args):
    _both(qemu_img, monkeypatch, capsys, tmp_path, ["create"] + args)
