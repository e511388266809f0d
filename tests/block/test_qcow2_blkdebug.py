"""qcow2 error paths under blkdebug (qemu-iotests 026, reliability T32): an
I/O error injected at each qcow2 metadata event fails the request, and
``qemu-img check`` then finds no corruption (leaks allowed)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import gqemu.block as blk_api
from gqemu.block.driver import BlockError
from gqemu.block.qcow2_create import Qcow2CreateOptions, qcow2_create_file

pytestmark = pytest.mark.timeout(180)

MiB = 1 << 20

# event -> (cluster_size, image size, data written before, the failing write)
EVENTS = {
    "l1_update": (65536, 1 << 30, None, (0, 128 * 1024)),
    "l2_load": (65536, 1 << 30, (0, 128 * 1024), (0, 128 * 1024)),
    "l2_update": (65536, 1 << 30, (0, 64 * 1024), (64 * 1024, 64 * 1024)),
    "l2_alloc_write": (65536, 1 << 30, None, (0, 128 * 1024)),
    "write_aio": (65536, 1 << 30, None, (0, 128 * 1024)),
    "refblock_load": (65536, 1 << 30, (0, 128 * 1024), (256 * 1024, 128 * 1024)),
    "refblock_update_part": (65536, 1 << 30, None, (0, 128 * 1024)),
    "cluster_alloc": (65536, 1 << 30, None, (0, 128 * 1024)),
    "cow_read": (65536, 1 << 30, None, (4096, 4096)),
    "cow_write": (65536, 1 << 30, None, (4096, 4096)),
    # 512-byte clusters with 64-bit refcounts: a refcount block covers 32 KiB
    # and the first refcount table 2 MiB, so these writes allocate refcount
    # blocks and then grow the table
    "refblock_alloc": (512, 8 * MiB, None, (0, 64 * 1024)),
    "refblock_alloc_hookup": (512, 8 * MiB, None, (0, 64 * 1024)),
    "refblock_alloc_write": (512, 8 * MiB, None, (0, 64 * 1024)),
    "refblock_alloc_write_blocks": (512, 8 * MiB, (0, 1900 * 1024), (1900 * 1024, 512 * 1024)),
    "refblock_alloc_write_table": (512, 8 * MiB, (0, 1900 * 1024), (1900 * 1024, 512 * 1024)),
    "refblock_alloc_switch_table": (512, 8 * MiB, (0, 1900 * 1024), (1900 * 1024, 512 * 1024)),
}


def _check(qemu_img: str, img: Path) -> subprocess.CompletedProcess:
    return subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)


def _one_case(qemu_img: str, tmp: Path, event: str, err: int, once: bool) -> int:
    cs, size, before, (off, n) = EVENTS[event]
    img = tmp / ("%s-%d-%d.qcow2" % (event, err, once))
    qcow2_create_file(str(img), Qcow2CreateOptions(size=size, cluster_size=cs,
                                                   refcount_bits=64 if cs == 512 else 16))
    if before:
        blk = blk_api.blk_new_open(str(img), {"format": "qcow2", "cache": "unsafe"})
        blk_api.blk_pwrite(blk, before[0], b"\x01" * before[1])
        blk_api.blk_unref(blk)
    conf = tmp / "blkdebug.conf"
    conf.write_text("[inject-error]\nevent = \"%s\"\nerrno = \"%d\"\nonce = \"%s\"\n"
                    % (event, err, "on" if once else "off"))
    blk = blk_api.blk_new_open("blkdebug:%s:%s" % (conf, img), {"format": "qcow2"})
    try:
        ret = blk_api.blk_prw(blk, off, bytearray(b"\x02" * n), n, True)
        if ret >= 0:
            try:
                ret = blk_api.blk_flush(blk)
            except blk_api.BlockError as e:
                ret = -e.errno
    finally:
        blk_api.blk_unref(blk)
    p = _check(qemu_img, img)
    assert p.returncode in (0, 3), "%s errno %d once %s: write %d\n%s%s" % (
        event, err, once, ret, p.stdout, p.stderr)
    # the data that made it is readable and the image stays writable
    blk = blk_api.blk_new_open(str(img), {"format": "qcow2"})
    try:
        got = blk_api.blk_pread(blk, off, n)
        if ret >= 0:
            assert got == b"\x02" * n, "%s: a completed write did not land" % event
        else:
            # a failed write leaves each cluster either as it was (0x01
            # where data was written before, else zeroes) or fully written
            was = bytearray(n)
            if before:
                lo, hi = max(off, before[0]), min(off + n, before[0] + before[1])
                was[lo - off:hi - off] = b"\x01" * max(0, hi - lo)
            for c in range(0, n, cs):
                chunk = got[c:c + cs]
                assert chunk in (bytes(was[c:c + cs]), b"\x02" * len(chunk)), (
                    "%s errno %d once %s: cluster at %d is torn" % (event, err, once, off + c))
        blk_api.blk_pwrite(blk, off, b"\x03" * n)
        assert blk_api.blk_pread(blk, off, n) == b"\x03" * n
    finally:
        blk_api.blk_unref(blk)
    return ret


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_026_matrix(qemu_img, tmp_path, event):
    failed = 0
    for err, once in ((5, False), (5, True), (28, False)):
        ret = _one_case(qemu_img, tmp_path, event, err, once)
        failed += ret < 0
        if not once:
            assert ret == -err, "%s errno %d: write returned %d" % (event, err, ret)
    assert failed >= 2


def test_corrupt_image_repair_after_injected_errors(qemu_img, tmp_path):
    """Errors on every refcount-block write while allocating: at worst leaks,
    and ``gqemu-img check -r leaks`` repairs them to a clean image."""
    _one_case(qemu_img, tmp_path, "refblock_update_part", 5, False)
    img = tmp_path / "refblock_update_part-5-0.qcow2"
    subprocess.run(["gqemu-img", "check", "-r", "leaks", str(img)], capture_output=True)
    assert _check(qemu_img, img).returncode == 0


def test_blkdebug_open_errors_are_block_errors(tmp_path):
    with pytest.raises(BlockError):
        blk_api.blk_new_open("blkdebug:%s:%s" % (tmp_path / "none.conf", tmp_path / "x"),
                             {"format": "qcow2"})
