"""Persistent dirty bitmaps (``qemu-img bitmap``, qcow2's bitmaps
extension, directory and tables) against QEMU 7.2's qemu-img / qemu-io:
the same sequence of commands run with the real tools and with gqemu's
leaves byte-identical image files; images with bitmaps that either side
made are read, changed and checked clean by the other; ``info``,
``measure`` and ``check`` print what qemu-img prints; the command's
errors are qemu-img's.  gqemu runs in-process, named qemu-img / qemu-io."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from gqemu.cli import qemu_img as gimg
from gqemu.cli import qemu_io as gio

pytestmark = pytest.mark.timeout(300)


def _g_img(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    capsys.readouterr()
    rc = gimg.main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _g_io(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["qemu-io"])
    capsys.readouterr()
    rc = gio.main(["qemu-io"] + args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _r(prog: str, args: list[str]) -> tuple[int, str, str]:
    p = subprocess.run([prog] + args, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


class Tools:
    """Run qemu-img / qemu-io steps with the real tools or with gqemu's."""

    def __init__(self, real: bool, qemu_img: str, qemu_io: str, monkeypatch, capsys) -> None:
        self.real, self.qi, self.qio = real, qemu_img, qemu_io
        self.mp, self.cap = monkeypatch, capsys

    def img(self, *args: str) -> tuple[int, str, str]:
        if self.real:
            return _r(self.qi, list(args))
        return _g_img(self.mp, self.cap, list(args))

    def io(self, *args: str) -> tuple[int, str, str]:
        if self.real:
            return _r(self.qio, list(args))
        return _g_io(self.mp, self.cap, list(args))


def _steps(t: Tools, img: str) -> list:
    """303's sequence and more: add, write and discard with an enabled and a
    disabled bitmap, clear, enable, merge, remove; outputs with timings dropped."""
    out = []
    out.append(t.img("bitmap", "--add", "-g", "32768", "-f", "qcow2", img, "bitmap-1"))
    for i in range(3):
        out.append(t.io("-f", "qcow2", "-c", "write -q %dM 1M" % i, img)[0])
    out.append(t.img("bitmap", "--add", "-g", "65536", "--disable", "-f", "qcow2", img,
                     "bitmap-2"))
    out.append(t.io("-f", "qcow2", "-c", "write -q 3M 512k", "-c", "write -q 9M 4k", img)[0])
    out.append(t.img("bitmap", "--add", "-f", "qcow2", img, "b3", "--merge", "bitmap-1",
                     "--enable", "--add", img))
    out.append(t.img("bitmap", "--merge", "bitmap-1", "--enable", "-f", "qcow2", img,
                     "bitmap-2"))
    out.append(t.img("bitmap", "--clear", "--disable", "-f", "qcow2", img, "bitmap-1"))
    out.append(t.io("-f", "qcow2", "-c", "write -q 5M 64k", "-c", "discard -q 5M 1k",
                    "-c", "discard -q 7M 3k", img)[0])
    out.append(t.img("info", "-f", "qcow2", img))
    out.append(t.img("info", "--output=json", "-f", "qcow2", img))
    out.append(t.img("check", "-f", "qcow2", img))
    out.append(t.img("measure", "-O", "qcow2", "-f", "qcow2", img))
    out.append(t.img("measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k",
                     "-f", "qcow2", img))
    out.append(t.img("bitmap", "--remove", "-f", "qcow2", img, "b3"))
    out.append(t.img("bitmap", "--remove", "-f", "qcow2", img, "b3"))
    out.append(t.img("check", "-f", "qcow2", img))
    return out


def test_same_commands_give_identical_files(qemu_img, qemu_io, monkeypatch, capsys, tmp_path):
    """Every bitmap, table and directory cluster lands where QEMU puts it,
    the header extension and autoclear bit are QEMU's, writes mark the
    enabled bitmaps only (fails on a gqemu without ``bitmap``)."""
    files = []
    outs = []
    for real in (True, False):
        img = str(tmp_path / ("real.qcow2" if real else "g.qcow2"))
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", img, "10M"], check=True)
        t = Tools(real, qemu_img, qemu_io, monkeypatch, capsys)
        o = _steps(t, img)
        outs.append([x if isinstance(x, int) else (x[0], x[1].replace(img, "IMG"),
                                                   x[2].replace(img, "IMG")) for x in o])
        files.append(open(img, "rb").read())
    for i, (got, want) in enumerate(zip(outs[1], outs[0])):
        assert got == want, i
    assert files[1] == files[0]
    assert any(not isinstance(x, int) and "bitmaps:" in x[1] for x in outs[0])


def test_cross_tools_read_and_check_clean(qemu_img, qemu_io, monkeypatch, capsys, tmp_path):
    """Bitmaps made by qemu-img (dirty from qemu-io writes) are loaded by
    gqemu, kept dirty across gqemu writes and stored so that qemu-img
    check is clean and qemu-img sees the same bitmaps; and the other way
    round."""
    real = Tools(True, qemu_img, qemu_io, monkeypatch, capsys)
    g = Tools(False, qemu_img, qemu_io, monkeypatch, capsys)
    a = str(tmp_path / "a.qcow2")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", a, "64M"], check=True)
    assert real.img("bitmap", "--add", a, "r1")[0] == 0
    assert real.io("-c", "write -q 1M 3M", a)[0] == 0
    assert real.img("bitmap", "--add", "-g", "1M", "--disable", a, "r2")[0] == 0
    b = str(tmp_path / "b.qcow2")
    shutil.copy(a, b)
    # the same changes through gqemu (on a) and through qemu (on b)
    for t, img in ((g, a), (real, b)):
        assert t.io("-c", "write -q 40M 1M", img)[0] == 0
        assert t.img("bitmap", "--add", "-g", "4k", img, "g1")[0] == 0
        assert t.io("-c", "write -q 63M 1M", "-c", "write -q 0 512", img)[0] == 0
        assert t.img("bitmap", "--merge", "g1", "--enable", img, "r2")[0] == 0
    assert open(a, "rb").read() == open(b, "rb").read()
    assert real.img("check", a)[0] == 0
    rc, out, err = g.img("check", a)
    assert (rc, out, err) == real.img("check", a)


@pytest.mark.parametrize("args", [
    [], ["IMG", "b"], ["--add", "IMG"], ["--add", "IMG", "b", "c"], ["-g", "1k", "IMG", "b"],
    ["--remove", "-g", "1k", "IMG", "b"], ["--remove", "-F", "raw", "IMG", "b"],
    ["--remove", "-b", "x", "IMG", "b"], ["--add", "--foo", "IMG", "b"], ["--add", "-g"],
    ["--add", "-g", "1x", "IMG", "b"], ["--add", "-g", "100", "IMG", "b"],
    ["--add", "-g", "4G", "IMG", "b"], ["--add", "-g", "1024", "IMG", "b"],
    ["--add", "-g", "4G", "IMG", "b"], ["--add", "-g", "2G", "IMG", "b"],
    ["--add", "IMG", ""], ["--add", "IMG", "x" * 1024], ["--add", "--add", "IMG", "b"],
    ["--remove", "IMG", "nope"], ["--clear", "IMG", "nope"], ["--enable", "IMG", "nope"],
    ["--merge", "nope", "IMG", "have"], ["--add", "--merge", "nope", "IMG", "b"],
    ["--merge", "have", "-b", "SRC", "IMG", "have"],
    ["--merge", "have", "-b", "SRC", "-F", "qcow2", "IMG", "new"],
    ["--merge", "have", "-b", "missing.qcow2", "IMG", "have"],
    ["--add", "-f", "raw", "IMG", "b"],
    ["--remove", "--add", "IMG", "have"],
    ["--add", "-f", "qcow2", "V2", "b"],
])
def test_errors_are_qemu_img_s(qemu_img, qemu_io, monkeypatch, capsys, tmp_path, args):
    """Option errors, QMP errors ("Operation OP on bitmap NAME failed: ...")
    and the image left as qemu-img leaves it."""
    outs, files = [], []
    for real in (True, False):
        d = tmp_path / ("r" if real else "g")
        d.mkdir()
        img, src, v2 = str(d / "i.qcow2"), str(d / "s.qcow2"), str(d / "v2.qcow2")
        for f, o in ((img, "compat=1.1"), (src, "compat=1.1"), (v2, "compat=0.10")):
            subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", o, f, "4M"],
                           check=True)
        subprocess.run([qemu_img, "bitmap", "--add", img, "have"], check=True)
        subprocess.run([qemu_img, "bitmap", "--add", "-g", "512", src, "have"], check=True)
        subst = {"IMG": img, "SRC": src, "V2": v2}
        a = [subst.get(x, x) for x in args]
        t = Tools(real, qemu_img, qemu_io, monkeypatch, capsys)
        rc, out, err = t.img("bitmap", *a)
        err = err.replace(str(d), "D")
        if "#block" in err:            # QEMU's generated node names are not modelled
            err = err[:err.index("#block")]
        outs.append((rc, out, err))
        files.append(open(img, "rb").read())
    assert outs[1] == outs[0]
    assert files[1] == files[0]


def test_stale_bitmaps_dropped_like_qemu(qemu_img, monkeypatch, capsys, tmp_path):
    """An image whose bitmaps autoclear bit was cleared (a program without
    bitmap support wrote it): the warning, and a writable open drops the
    extension; check then reports the leaked clusters as qemu-img does."""
    outs, files = [], []
    for real in (True, False):
        img = str(tmp_path / ("r.qcow2" if real else "g.qcow2"))
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", img, "4M"], check=True)
        subprocess.run([qemu_img, "bitmap", "--add", img, "b"], check=True)
        with open(img, "r+b") as f:
            f.seek(88)
            f.write(b"\0" * 8)
        t = Tools(real, qemu_img, "qemu-io", monkeypatch, capsys)
        o = [t.img("info", img), t.img("bitmap", "--add", img, "c"), t.img("check", img)]
        outs.append([(rc, out.replace(img, "I"), err.replace(img, "I")) for rc, out, err in o])
        files.append(open(img, "rb").read())
    assert outs[1] == outs[0]
    assert files[1] == files[0]


@pytest.mark.parametrize("args", [
    ["--bitmaps", "-O", "qcow2", "SRC", "OUT"],
    ["--bitmaps", "-O", "qcow2", "-o", "cluster_size=4k", "SRC", "OUT"],
    ["--bitmaps", "-O", "raw", "SRC", "OUT"],
    ["--bitmaps", "-O", "qcow2", "-o", "compat=0.10", "SRC", "OUT"],
    ["--bitmaps", "-O", "qcow2", "SRC", "SRC", "OUT"],
    ["--bitmaps", "-O", "qcow2", "-f", "raw", "SRC", "OUT"],
    ["--skip-broken-bitmaps", "-O", "qcow2", "SRC", "OUT"],
    ["--bitmaps", "-O", "qcow2", "BROKEN", "OUT"],
    ["--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", "BROKEN", "OUT"],
    ["-C", "-O", "qcow2", "SRC", "OUT"], ["-C", "-S", "4k", "-O", "qcow2", "SRC", "OUT"],
    ["-C", "-c", "-O", "qcow2", "SRC", "OUT"], ["-C", "--salvage", "-O", "qcow2", "SRC", "OUT"],
])
def test_convert_bitmaps_like_qemu_img(qemu_img, qemu_io, monkeypatch, capsys, tmp_path, args):
    """``convert --bitmaps`` copies the persistent bitmaps (enabled state,
    granularity, dirty bits) into byte-identical targets; its errors and
    ``-C``'s are qemu-img's."""
    outs, files = [], []
    for real in (True, False):
        d = tmp_path / ("r" if real else "g")
        d.mkdir()
        src, broken, out = str(d / "s.qcow2"), str(d / "b.qcow2"), str(d / "o.qcow2")
        for f in (src, broken):
            subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", f, "8M"], check=True)
            subprocess.run([qemu_img, "bitmap", "--add", "-g", "4k", f, "a"], check=True)
            subprocess.run([qemu_io, "-c", "write -q 1M 100k", f], check=True,
                           capture_output=True)
            subprocess.run([qemu_img, "bitmap", "--add", "--disable", "--merge", "a", f, "d"],
                           check=True)
        with open(broken, "r+b") as fh:          # mark bitmap "a" in use: inconsistent
            data = bytearray(fh.read())
        hdr_end = data.index(b"\x23\x85\x28\x75")
        dir_off = int.from_bytes(data[hdr_end + 24:hdr_end + 32], "big")
        data[dir_off + 15] |= 1
        with open(broken, "wb") as fh:
            fh.write(data)
        subst = {"SRC": src, "BROKEN": broken, "OUT": out}
        t = Tools(real, qemu_img, qemu_io, monkeypatch, capsys)
        rc, o, e = t.img("convert", *[subst.get(x, x) for x in args])
        outs.append((rc, o, e.replace(str(d), "D")))
        files.append(open(out, "rb").read() if rc == 0 else b"")
    assert outs[1] == outs[0]
    assert files[1] == files[0]


@pytest.mark.parametrize("args", [
    ["create", "-f", "qcow2", "-o", "help", "F", "1M"],
    ["create", "-f", "qcow2", "-o", "?", "F"],
    ["create", "-f", "qcow2", "-o", "cluster_size=4k,help", "F"],
    ["create", "-f", "qcow2", "-o", "cluster_size=4k", "-o", "?", "F"],
    ["create", "-f", "qcow2", "-o", "F,", "-o", "help", "F"],
    ["create", "-f", "qcow2", "-o", ",help", "F"],
    ["create", "-f", "qcow2", "-o", "help"], ["create", "-o", "help"],
    ["create", "-f", "raw", "-o", "help", "F"], ["create", "-f", "bochs", "-o", "help"],
    ["create", "-f", "file", "-o", "help"], ["create", "-f", "host_device", "-o", "help"],
    ["create", "-f", "qcow2", "-o", "help", "/dev/null"],
    ["create", "-f", "foo", "-o", "help"],
    ["convert", "-O", "qcow2", "-o", "help", "F", "F.base"],
    ["convert", "-O", "qcow2", "-o", "help"], ["convert", "-o", "help"],
    ["convert", "-O", "raw", "-o", "?", "F"], ["convert", "-O", "bochs", "-o", "help"],
    ["convert", "-O", "qcow2", "-o", ",,", "-o", "help", "F", "G"],
])
def test_create_convert_option_help(qemu_img, monkeypatch, capsys, tmp_path, args):
    """``-o help`` / ``-o ?``: the format's and the protocol's creation
    options in QemuOpts' layout, and the option-list errors (082)."""
    f = str(tmp_path / "t.qcow2")
    a = [f if x == "F" else x.replace("F,", f + ",") for x in args]
    want = _r(qemu_img, a)
    got = _g_img(monkeypatch, capsys, a)
    assert got == want


@pytest.mark.parametrize("size,broken", [("+3M", False), ("-1M", False), ("100M", False),
                                         ("+1M", True)])
def test_resize_with_bitmaps_like_qemu_img(qemu_img, qemu_io, monkeypatch, capsys, tmp_path,
                                           size, broken):
    """A resize grows or shrinks the bitmaps with the image (dirty bits past
    a shrunk end dropped); an inconsistent bitmap refuses the resize."""
    outs, files = [], []
    for real in (True, False):
        img = str(tmp_path / ("r.qcow2" if real else "g.qcow2"))
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", img, "4M"], check=True)
        subprocess.run([qemu_img, "bitmap", "--add", "-g", "512", img, "b"], check=True)
        subprocess.run([qemu_io, "-c", "write -q 3M 1M", img], check=True)
        if broken:
            with open(img, "r+b") as fh:
                data = bytearray(fh.read())
            ext = data.index(b"\x23\x85\x28\x75")
            dir_off = int.from_bytes(data[ext + 24:ext + 32], "big")
            data[dir_off + 15] |= 1
            with open(img, "wb") as fh:
                fh.write(data)
        t = Tools(real, qemu_img, qemu_io, monkeypatch, capsys)
        rc, o, e = t.img("resize", "--shrink", img, "--", size)
        outs.append((rc, o, e.replace(img, "I")))
        files.append(open(img, "rb").read())
    assert outs[1] == outs[0]
    assert files[1] == files[0]


@pytest.mark.parametrize("opt", ["compat=0.10", "refcount_bits=8", "lazy_refcounts=on",
                                 "size=8M"])
def test_amend_with_bitmaps_like_qemu_img(qemu_img, qemu_io, monkeypatch, capsys, tmp_path,
                                          opt):
    """amend keeps (or, to v2, strands) the bitmaps as qemu-img does; the
    v2 image's stale extension then warns and is dropped on a writable open."""
    outs, files = [], []
    for real in (True, False):
        img = str(tmp_path / ("r.qcow2" if real else "g.qcow2"))
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", img, "4M"], check=True)
        subprocess.run([qemu_img, "bitmap", "--add", "-g", "512", img, "b"], check=True)
        subprocess.run([qemu_io, "-c", "write -q 1M 1M", img], check=True)
        t = Tools(real, qemu_img, qemu_io, monkeypatch, capsys)
        o = [t.img("amend", "-o", opt, img), t.img("info", img),
             t.img("bitmap", "--add", img, "c"), t.img("check", img)]
        # QEMU's generated node names (#blockNNN) are not modelled
        outs.append([(rc, a.replace(img, "I"), re.sub(r"#block\d+", "#block", b.replace(img, "I")))
                     for rc, a, b in o])
        files.append(open(img, "rb").read())
    assert outs[1] == outs[0]
    assert files[1] == files[0]
