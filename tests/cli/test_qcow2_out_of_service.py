"""A qcow2 node that a fatal corruption took out of service (QEMU sets
``bs->drv = NULL``), and the check repairs around it (the kinds of case
qemu-iotests 060 covers): gqemu's tools against the real qemu-img/qemu-io on
the same script, output, exit statuses and the resulting image compared
whole.

The offsets poked are those of a fresh 64 MiB image with 64 KiB clusters:
the refcount table at 0x10000, the first refcount block at 0x20000, the L1
table at 0x30000 and, after the first write, the L2 table at 0x40000.
"""
from __future__ import annotations

import pytest

import difftools

pytestmark = pytest.mark.timeout(180)

# poke FILE OFFSET HEXBYTES: overwrite bytes in place, as iotests' poke_file
_POKE = r"""
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
"""


def _compare(script: str, tmp_path, qemu_img: str, qemu_io: str, must: str) -> None:
    real, ours = difftools.both(_POKE + script, tmp_path, qemu_img, qemu_io)
    assert must in real, real
    assert ours == real


def test_l2_pointing_into_a_short_l1_cluster(tmp_path, qemu_img, qemu_io):
    """The L2 pointer names the L1 table's own cluster, which the file does
    not fill: the slice reads zero-filled and the write is stopped by the
    overlap check, not refused as "beyond the end of the file"."""
    script = r"""
qemu-img create -q -f qcow2 t.qcow2 64M
poke t.qcow2 196608 '\x80\x00\x00\x00\x00\x03\x00\x00'
qemu-io -c 'open -o overlap-check=all t.qcow2' -c 'write -P 0x2a 0 512'; echo "rc=$?"
qemu-io -c 'open -r t.qcow2' -c 'read 0 512'; echo "rc=$?"
qemu-img check t.qcow2; echo "rc=$?"
md5sum t.qcow2 | cut -d' ' -f1
"""
    _compare(script, tmp_path, qemu_img, qemu_io, "overlaps with active L1 table")


def test_discard_tail_after_the_node_went_out_of_service(tmp_path, qemu_img, qemu_io):
    """An unaligned refblock: freeing the discarded cluster marks the image
    corrupt, and the discard's second part (the 1-byte tail) finds no
    driver: ENOMEDIUM.  The repair's own double check then fails the same
    way, and a second repair finishes the job."""
    script = r"""
qemu-img create -q -f qcow2 t.qcow2 64M
qemu-io -c 'write 0 128k' t.qcow2 >/dev/null
poke t.qcow2 65536 '\x00\x00\x00\x00\x00\x00\x2a\x00'
qemu-io -c 'discard 0 65537' t.qcow2; echo "rc=$?"
qemu-img check -q -r all t.qcow2; echo "rc=$?"
qemu-img check -r all t.qcow2; echo "rc=$?"
md5sum t.qcow2 | cut -d' ' -f1
"""
    _compare(script, tmp_path, qemu_img, qemu_io, "Check failed: No medium found")


def test_cow_resumed_after_the_node_went_out_of_service(tmp_path, qemu_img, qemu_io):
    """A COW read held at a blkdebug breakpoint while another write trips
    the overlap check: the resumed request fails with ENOMEDIUM (QEMU's
    do_perform_cow_read), and 'resume' still reaches blkdebug through the
    driverless qcow2 node."""
    script = r"""
qemu-img create -q -f qcow2 b.qcow2 1G
qemu-io -c 'write 0k 64k' b.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 1G
qemu-io -c 'write 0k 64k' -c 'write 512M 64k' t.qcow2 >/dev/null
poke t.qcow2 262144 '\x00\x00\x00\x00\x00\x00\x00\x00'
poke t.qcow2 131082 '\x00\x00'
poke t.qcow2 131084 '\x00\x00'
printf 'open -o file.driver=blkdebug t.qcow2\nbreak cow_read 0\naio_write 0k 1k\nwait_break 0\nwrite 64k 64k\nresume 0\n' | qemu-io; echo "rc=$?"
"""
    _compare(script, tmp_path, qemu_img, qemu_io, "aio_write failed: No medium found")


def test_shrink_with_a_refblock_past_the_reftable(tmp_path, qemu_img, qemu_io):
    """A refblock pointer so high that no reftable entry covers it: the
    shrink reports it (no internal error), and the retry succeeds."""
    script = r"""
qemu-img create -q -f qcow2 t.qcow2 64M
poke t.qcow2 65544 '\x00\xff\xff\xff\x00\x00\x00\x00'
qemu-img resize --shrink t.qcow2 32M; echo "rc=$?"
qemu-img info t.qcow2 | grep 'virtual size'
qemu-img check -r all t.qcow2; echo "rc=$?"
qemu-img resize --shrink t.qcow2 32M; echo "rc=$?"
qemu-img info t.qcow2 | grep 'virtual size'
"""
    _compare(script, tmp_path, qemu_img, qemu_io, "is not covered by the refcount structures")


@pytest.mark.parametrize("pointer", [r"\x00\x00\x00\x00\x00\x10\x00\x00",
                                     r"\x7f\xff\xff\xff\xff\xff\x00\x00",
                                     r"\xff\xff\xff\xff\xff\xff\x00\x00"])
def test_repair_of_a_refblock_past_the_end_of_the_file(tmp_path, qemu_img, qemu_io, pointer):
    """'check -r all' grows the file to cover a refcount block just past
    its end (QEMU's check_refblocks), and cannot for pointers past
    INT64_MAX (EINVAL, then a rebuild); plain 'check' only reports."""
    script = r"""
qemu-img create -q -f qcow2 t.qcow2 64M
poke t.qcow2 65544 '%s'
qemu-img check t.qcow2; echo "rc=$?"
qemu-img check -r all t.qcow2; echo "rc=$?"
stat -c %%s t.qcow2
md5sum t.qcow2 | cut -d' ' -f1
""" % pointer
    _compare(script, tmp_path, qemu_img, qemu_io, "outside image")


def test_check_output_order_into_a_pipe(tmp_path, qemu_img, qemu_io):
    """qemu-img's stdout is block-buffered into a pipe (C stdio), so the
    double check's error comes out before the repair summary; with
    PYTHONUNBUFFERED set gqemu-img keeps that order."""
    script = r"""
qemu-img create -q -f qcow2 t.qcow2 64M
qemu-io -c 'write 0 128k' t.qcow2 >/dev/null
poke t.qcow2 65536 '\x00\x00\x00\x00\x00\x00\x2a\x00'
PYTHONUNBUFFERED=1 qemu-img check -r all t.qcow2 2>&1 | cat; echo "rc=$?"
"""
    real, ours = difftools.both(_POKE + script, tmp_path, qemu_img, qemu_io)
    assert real.index("Check failed") < real.index("The following inconsistencies"), real
    assert ours == real
