"""qcow2 ``compression_type=zstd`` (iotest 287): gqemu-img/gqemu-io print
what qemu-img/qemu-io 7.2 print for the same script, and each reads the
compressed clusters the other writes.  Needs the optional ``zstandard``
package; without it gqemu answers as a QEMU built without zstd."""
from __future__ import annotations

import struct
import subprocess
import sys

import pytest

import difftools
from gqemu.block import qcow2_zstd
from gqemu.cli import qemu_img as gimg
from gqemu.cli import qemu_io as gio

pytestmark = pytest.mark.timeout(120)

SCRIPT = r"""
qemu-img create -f qcow2 -o compression_type=zstd t.qcow2 4M
qemu-img info t.qcow2 | grep -v 'disk size'
qemu-img info --output=json t.qcow2 | grep -v actual-size
qemu-io -c "write -c -P 0xAC 64K 64K" -c "write -c 0 64K" -c "write -c -P 7 4032K 64k" t.qcow2
qemu-io -c "read -P 0xAC 64K 64K" -c "read -v 131070 8" -c "read -v 65534 8" t.qcow2
qemu-io -c "info" t.qcow2
qemu-img check t.qcow2
qemu-img create -f qcow2 -o compression_type=zstd,compat=0.10 v2.qcow2 4M
qemu-img create -f qcow2 -o compression_type=lz4 v2.qcow2 4M
qemu-img create -f qcow2 -o compression_type=zlib u.qcow2 4M
qemu-io -c "write -P 0xFA 0 1M" -c "write -c -P 3 1M 64k" u.qcow2 | grep -c wrote
qemu-img convert -c -O qcow2 -o compression_type=zstd u.qcow2 z.qcow2
qemu-img compare u.qcow2 z.qcow2
qemu-img map --output=json z.qcow2 | sed 's/"offset": [0-9]*/"offset": N/'
"""


def _gimg(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["qemu-img"])
    return gimg.main(list(args))


def test_zstd_outputs_are_qemus(tmp_path, qemu_img, qemu_io):
    real, ours = difftools.both(SCRIPT, tmp_path, qemu_img, qemu_io)
    assert "compression type: zstd" in real
    assert ours == real


def _header_bits(path) -> tuple[int, int]:
    b = path.read_bytes()[:112]
    return struct.unpack(">Q", b[72:80])[0], b[104]


def test_zstd_header_bit_and_field(tmp_path, qemu_img, monkeypatch):
    """Incompatible bit 3 and byte 104 = 1, as qemu-img writes them; an
    image with the bit cleared (or zlib with the bit set) is refused."""
    ours, real = tmp_path / "g.qcow2", tmp_path / "r.qcow2"
    assert _gimg(monkeypatch, "create", "-q", "-f", "qcow2", "-o",
                      "compression_type=zstd", str(ours), "1M") == 0
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd",
                    str(real), "1M"], check=True)
    assert _header_bits(ours) == _header_bits(real) == (8, 1)
    assert ours.read_bytes() == real.read_bytes()
    for incompat, ctype in ((0, 1), (8, 0)):
        with open(ours, "r+b") as f:
            f.seek(72)
            f.write(struct.pack(">Q", incompat))
            f.seek(104)
            f.write(bytes([ctype]))
        r = subprocess.run([qemu_img, "info", str(ours)], capture_output=True, text=True)
        g = subprocess.run([str(difftools.gqemu_bin(tmp_path) / "qemu-img"), "info",
                            str(ours)], capture_output=True, text=True)
        assert r.returncode == g.returncode == 1
        assert g.stderr == r.stderr


def test_zstd_cross_read(tmp_path, qemu_img, qemu_io):
    """Clusters gqemu compresses read back through qemu-io and pass
    qemu-img check; clusters qemu-io compresses read back through gqemu."""
    gio_bin = str(difftools.gqemu_bin(tmp_path) / "qemu-io")
    img = tmp_path / "x.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd",
                    str(img), "1M"], check=True)
    for writer, reader, off in ((gio_bin, qemu_io, 0), (qemu_io, gio_bin, 65536)):
        subprocess.run([writer, "-c", "write -c -P 0x5a %d 64k" % off, str(img)], check=True,
                       capture_output=True)
        r = subprocess.run([reader, "-c", "read -P 0x5a %d 64k" % off, str(img)],
                           capture_output=True, text=True)
        assert "Pattern verification failed" not in r.stdout and r.returncode == 0, r
    chk = subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)
    assert chk.returncode == 0 and "2/16 = 12.50% allocated" in chk.stdout, chk.stdout
    assert "100.00% compressed clusters" in chk.stdout


def test_without_zstandard_qemus_messages(tmp_path, monkeypatch, capsys):
    """No ``zstandard``: the messages of a QEMU built without CONFIG_ZSTD
    (the QAPI enum has no 'zstd'; validate_compression_type refuses 1)."""
    img = tmp_path / "z.qcow2"
    assert _gimg(monkeypatch, "create", "-q", "-f", "qcow2", "-o",
                      "compression_type=zstd", str(img), "1M") == 0
    monkeypatch.setattr(qcow2_zstd, "_zstd", False)
    capsys.readouterr()
    assert _gimg(monkeypatch, "create", "-q", "-f", "qcow2", "-o",
                      "compression_type=zstd", str(tmp_path / "n.qcow2"), "1M") == 1
    assert capsys.readouterr().err == ("qemu-img: %s: Parameter 'compression-type' does not "
                                       "accept value 'zstd'\n" % (tmp_path / "n.qcow2"))
    assert not (tmp_path / "n.qcow2").exists()
    assert _gimg(monkeypatch, "info", str(img)) == 1
    assert capsys.readouterr().err == ("qemu-img: Could not open '%s': qcow2: unknown "
                                       "compression type: 1\n" % img)


# The same compressed clusters and files as QEMU's, in-process (iotest 303
# needs them).


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
