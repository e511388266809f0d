"""qcow2 images with ``compression_type=zstd`` against QEMU 7.2 (built
with zstd, as Debian's is): create makes the same file and the same
errors, compressed writes give the same clusters, each side reads the
other's compressed data, info says zstd (iotest 303 needs them).
gqemu runs in-process, named qemu-img / qemu-io."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gqemu.cli import qemu_img as gimg
from gqemu.cli import qemu_io as gio

pytestmark = pytest.mark.timeout(120)


def _g(main, prog, monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", [prog])
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _r(args):
    p = subprocess.run(args, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("opts", ["compression_type=zstd", "compression_type=zstd,compat=0.10",
                                  "compression_type=lz4", "compression_type=zlib"])
def test_create_zstd_like_qemu_img(qemu_img, monkeypatch, capsys, tmp_path, opts):
    r, g = str(tmp_path / "r.qcow2"), str(tmp_path / "g.qcow2")
    want = _r([qemu_img, "create", "-f", "qcow2", "-o", opts, r, "10M"])
    got = _g(gimg.main, "qemu-img", monkeypatch, capsys,
             ["create", "-f", "qcow2", "-o", opts, g, "10M"])
    assert got == tuple(x.replace(r, g) if isinstance(x, str) else x for x in want)
    if want[0] == 0:
        assert open(g, "rb").read() == open(r, "rb").read()
        assert _g(gimg.main, "qemu-img", monkeypatch, capsys, ["info", g])[1] == \
            _r([qemu_img, "info", r])[1].replace(r, g)


def test_zstd_compressed_clusters_match(qemu_img, qemu_io, monkeypatch, capsys, tmp_path):
    """The same compressed writes leave identical files; each tool reads
    the other's compressed clusters."""
    r, g = str(tmp_path / "r.qcow2"), str(tmp_path / "g.qcow2")
    for f in (r, g):
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd",
                        f, "1M"], check=True)
    cmds = ["write -c -P 7 0 64k", "write -c -P 3 64k 64k", "write -c 128k 64k"]
    args = [x for c in cmds for x in ("-c", c)]
    assert _r([qemu_io] + args + [r])[0] == 0
    assert _g(gio.main, "qemu-io", monkeypatch, capsys, ["qemu-io"] + args + [g])[0] == 0
    assert open(g, "rb").read() == open(r, "rb").read()
    rd = ["-c", "read -P 7 0 64k", "-c", "read -P 3 64k 64k"]
    assert "Pattern verification failed" not in _r([qemu_io] + rd + [g])[1]
    out = _g(gio.main, "qemu-io", monkeypatch, capsys, ["qemu-io"] + rd + [r])[1]
    assert out.count("read 65536/65536") == 2 and "Pattern verification failed" not in out
