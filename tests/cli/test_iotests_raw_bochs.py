"""The read-only ``bochs`` driver against real qemu-io/qemu-img 7.2 on the
same images, built by QEMU's layout (bochs_images.py): contents (v1 and
v2 headers, extents allocated out of order, sectors left out of the
bitmaps), probing, info/map/check, what cannot be done (write, create,
convert to bochs, amend: qemu-iotests 113) and corrupt headers and
catalogs (qemu-iotests 078's cases and more) - each error one line, no
read outside the file."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

import bochs_images
import difftools

pytestmark = pytest.mark.timeout(180)


def test_contents_match_the_layout(tmp_path, qemu_img, qemu_io):
    """Both tools read back exactly what the builder put in the guest view."""
    for name, kw in (("v2", dict(disk=3 << 20, extent=8192, seed=3)),
                     ("v1", dict(disk=(1 << 20) + 4096, extent=32768, seed=4,
                                 version=0x10000)),
                     ("big-bitmap", dict(disk=1 << 20, extent=65536, bitmap=1536, seed=5))):
        img = tmp_path / (name + ".bochs")
        (tmp_path / (name + ".expect")).write_bytes(bochs_images.make(img, **kw))
    script = r"""
for n in v2 v1 big-bitmap; do
    qemu-img convert -O raw $n.bochs $n.raw && cmp $n.raw $n.expect && echo same-$n
    qemu-img info $n.bochs; qemu-img map --output=json $n.bochs
    qemu-io -r -c 'read -v 8192 1024' -c 'read 1000 3000' -c 'map' $n.bochs
done
qemu-img compare -f bochs -F raw v2.bochs v2.raw; echo rc=$?
qemu-img check v2.bochs; echo rc=$?
"""
    for d in ("real", "gqemu"):
        for f in tmp_path.glob("*.bochs"):
            (tmp_path / d).mkdir(exist_ok=True)
            (tmp_path / d / f.name).write_bytes(f.read_bytes())
            (tmp_path / d / f.with_suffix(".expect").name).write_bytes(
                f.with_suffix(".expect").read_bytes())
    real = difftools.run_script(script, str(Path(qemu_img).parent), tmp_path / "real")
    ours = difftools.run_script(script, str(difftools.gqemu_bin(tmp_path)),
                                tmp_path / "gqemu")
    assert "same-v1" in real and "same-big-bitmap" in real and ours == real


UNSUPPORTED = r"""
cp "$SAMPLE" e.bochs
qemu-img create -f bochs nbd://example.com 64M; echo rc=$?
qemu-img create -f nosuch x.img 64M; echo rc=$?
qemu-img convert -f bochs -O bochs e.bochs nbd://example.com; echo rc=$?
qemu-img convert -f bochs -O nosuch e.bochs x; echo rc=$?
qemu-img create -q -f raw t.raw 1M
qemu-img amend -f raw -o size=2M t.raw; echo rc=$?
qemu-img amend -o size=2M t.raw; echo rc=$?
qemu-img amend -f raw t.raw; echo rc=$?
qemu-img amend -f raw -o help t.raw; echo rc=$?
qemu-img amend -f nosuch -o help; echo rc=$?
qemu-img amend -f raw -o size=2M; echo rc=$?
qemu-img amend -t bogus -o size=2M t.raw; echo rc=$?
qemu-img amend -o size=2M e.bochs; echo rc=$?
qemu-io -c 'read 0 512' e.bochs; echo rc=$?
qemu-io -r -c 'write 0 512' e.bochs; echo rc=$?
qemu-img info --output=json e.bochs
"""


def test_what_bochs_cannot_do(tmp_path, qemu_img, qemu_io):
    # An image like qemu-iotests' empty.bochs: 1008 KiB, no extent written.
    sample = tmp_path / "empty.bochs"
    bochs_images.make(sample, disk=1032192, extent=4096, fill=0.0)
    real, ours = difftools.both("SAMPLE=%s\n%s" % (sample, UNSUPPORTED), tmp_path,
                                qemu_img, qemu_io)
    assert "does not support image creation" in real and ours == real


def _le32(v: int) -> bytes:
    return struct.pack("<I", v)


# (offset, bytes) pokes into a sound 1 MiB image (extent 4096: 256 catalog
# entries from 512), then qemu-io reads.
CORRUPTIONS = {
    "negative-catalog": [(0x48, _le32(0xFFFFFFFF))],
    "catalog-overflow": [(0x48, _le32(0x40000000))],
    "catalog-at-limit": [(0x48, _le32(0x100000))],
    "disk-too-big": [(0x58, struct.pack("<Q", 0x7F00000000FC000))],
    "catalog-too-small": [(0x48, _le32(16))],
    "negative-extent": [(0x50, _le32(0x80000000))],
    "zero-extent": [(0x50, _le32(0))],
    "extent-not-pow2": [(0x50, _le32(3000))],
    "extent-too-large": [(0x50, _le32(0x1000000))],
    "bad-magic": [(0, b"Bochs Virtual HD Imagf")],
    "bad-version": [(0x40, _le32(0x30000))],
    "undoable": [(48, b"Undoable")],
    "header-past-eof": [(0x44, _le32(0x7FFFFFF0))],
    "catalog-entry-past-eof": [(512, _le32(0x00FFFFFF))],
    "catalog-entry-huge": [(512, _le32(0xFFFFFFFE)), (0x4C, _le32(0))],
    "zero-bitmap-size": [(0x4C, _le32(0))],
    "data-offset-wraps": [(0x44, _le32(0xFFFFFE00))],
}


def test_corrupt_images_same_as_qemu(tmp_path, qemu_img, qemu_io):
    """Every corruption in one qemu-io run (open, read, close per image,
    probed and with driver=bochs), so the comparison costs few processes."""
    cmds = []
    for case in sorted(CORRUPTIONS):
        path = tmp_path / (case + ".bochs")
        bochs_images.make(path, disk=1 << 20, extent=4096, seed=7, fill=1.0)
        for offset, data in CORRUPTIONS[case]:
            bochs_images.poke(path, offset, data)
        for d in ("real", "gqemu"):
            (tmp_path / d).mkdir(exist_ok=True)
            (tmp_path / d / path.name).write_bytes(path.read_bytes())
        for how in ("-r", "-r -o driver=bochs"):
            cmds += ["-c 'open %s %s'" % (how, path.name), "-c 'read 0 4096'",
                     "-c 'read 1040384 8192'", "-c 'read -v 4096 32'", "-c close"]
    # stdout and stderr apart: qemu-io's piped stdout is flushed only at exit.
    script = ("echo " + " ".join(sorted(CORRUPTIONS)) + "\nqemu-io " + " ".join(cmds) +
              " 2>err; echo rc=$?; cat err\nqemu-img info negative-extent.bochs; echo rc=$?\n")
    real = difftools.run_script(script, str(Path(qemu_img).parent), tmp_path / "real")
    ours = difftools.run_script(script, str(difftools.gqemu_bin(tmp_path)), tmp_path / "gqemu")
    assert "Catalog size is too large" in real and "not in Bochs format" in real
    assert "Traceback" not in ours and ours == real
