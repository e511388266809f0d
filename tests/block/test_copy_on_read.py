"""copy-on-read (-drive copy-on-read=on): reads of clusters that come from
the backing file copy them into the image; the resulting allocation map
equals the one real ``qemu-io -C`` leaves behind for the same reads."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from gqemu.block import BlockError, blk_new_open, blk_pread, blk_unref

pytestmark = pytest.mark.timeout(90)

READS = [(100000, 70000), (1048576, 512), (3 * 1048576 - 1, 2), (0, 1)]


def test_copy_on_read_map_matches_qemu_io(tmp_path, qemu_img, qemu_io) -> None:
    base = tmp_path / "base.raw"
    data = os.urandom(4 << 20)
    base.write_bytes(data)
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(theirs)], check=True)
    shutil.copy(theirs, ours)
    argv = [qemu_io, "-C"]
    for off, n in READS:
        argv += ["-c", "read %d %d" % (off, n)]
    subprocess.run(argv + [str(theirs)], check=True, capture_output=True, timeout=60)
    blk = blk_new_open(str(ours), {"format": "qcow2", "copy-on-read": "on"})
    for off, n in READS:
        assert blk_pread(blk, off, n) == data[off:off + n]
    blk_unref(blk)
    maps = [subprocess.run([qemu_img, "map", "--output=json", str(p)], check=True,
                           capture_output=True, text=True).stdout for p in (ours, theirs)]
    assert maps[0] == maps[1]
    assert '"depth": 0' in maps[0]
    r = subprocess.run([qemu_img, "check", str(ours)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_copy_on_read_needs_write_access(tmp_path) -> None:
    img = tmp_path / "img"
    img.write_bytes(bytes(4096))
    with pytest.raises(BlockError, match="^Can't use copy-on-read on read-only device$"):
        blk_new_open(str(img), {"format": "raw", "copy-on-read": "on", "readonly": "on"})


@pytest.mark.parametrize("order", ["read_first", "write_first"])
def test_copy_does_not_overwrite_concurrent_write(tmp_path, qemu_img, order: str) -> None:
    """A write into the cluster being copied must survive the copy (the
    copy-on-read request serialises at cluster size)."""
    from gqemu.block import QEMUIOVector, blk_aio_preadv, blk_aio_pwritev, blk_drain
    base = tmp_path / "base.raw"
    data = os.urandom(1 << 20)
    base.write_bytes(data)
    ov = tmp_path / "ov.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(ov)], check=True)
    blk = blk_new_open(str(ov), {"format": "qcow2", "copy-on-read": "on"})
    got = bytearray(512)
    ops = [lambda: blk_aio_preadv(blk, 0, QEMUIOVector([got]), 0, None, None),
           lambda: blk_aio_pwritev(blk, 32768, QEMUIOVector([b"W" * 512]), 0, None, None)]
    for op in (ops if order == "read_first" else ops[::-1]):
        op()
    blk_drain(blk)
    assert bytes(got) == data[:512]
    expect = bytearray(data[:65536])
    expect[32768:33280] = b"W" * 512
    assert blk_pread(blk, 0, 65536) == bytes(expect)
    blk_unref(blk)
