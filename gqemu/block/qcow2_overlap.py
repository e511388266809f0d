"""qcow2 metadata protection: the overlap checks that refuse a write over
metadata, corruption signalling (the corrupt bit, the node made unusable),
and the dirty bit of lazy refcounts.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c qcow2_check_metadata_overlap /
qcow2_pre_write_overlap_check; block/qcow2.c qcow2_signal_corruption,
qcow2_mark_corrupt, qcow2_mark_dirty.
"""
from __future__ import annotations

from errno import EIO
import struct
import sys
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_cache import qcow2_co_flush_file, qcow2_co_pwrite_file
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY, REFT_OFFSET_MASK)

# overlap-check kinds.  QEMU: QCow2MetadataOverlap
QCOW2_OL_MAIN_HEADER = 1 << 0
QCOW2_OL_ACTIVE_L1 = 1 << 1
QCOW2_OL_ACTIVE_L2 = 1 << 2
QCOW2_OL_REFCOUNT_TABLE = 1 << 3
QCOW2_OL_REFCOUNT_BLOCK = 1 << 4
QCOW2_OL_SNAPSHOT_TABLE = 1 << 5
QCOW2_OL_INACTIVE_L1 = 1 << 6
QCOW2_OL_INACTIVE_L2 = 1 << 7
QCOW2_OL_BITMAP_DIRECTORY = 1 << 8
QCOW2_OL_CONSTANT = (QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1
                     | QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_SNAPSHOT_TABLE
                     | QCOW2_OL_BITMAP_DIRECTORY)
QCOW2_OL_CACHED = (QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2
                   | QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1)
QCOW2_OL_ALL = QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2
metadata_ol_names = ["qcow2_header", "active L1 table", "active L2 table",
                     "refcount table", "refcount block", "snapshot table",
                     "inactive L1 table", "inactive L2 table", "bitmap directory"]


def error_report(msg: str) -> None:
    """QEMU's error_report: one line on stderr."""
    sys.stderr.write(msg + "\n")


@coroutine_fn
def qcow2_write_incompat(bs: Any) -> int:
    """Write the incompatible-features field (offset 72) and flush."""
    s = bs.opaque
    ret = qcow2_co_pwrite_file(bs, 72, struct.pack(">Q", s.incompatible_features))
    if ret < 0:
        return ret
    return qcow2_co_flush_file(bs)


@coroutine_fn
def qcow2_mark_corrupt(bs: Any) -> int:
    """Set the corrupt bit on disk.  QEMU: block/qcow2.c qcow2_mark_corrupt."""
    s = bs.opaque
    s.incompatible_features |= QCOW2_INCOMPAT_CORRUPT
    if s.qcow_version < 3:
        return 0
    return qcow2_write_incompat(bs)


def qcow2_signal_corruption(bs: Any, fatal: bool, offset: int, size: int,
                            msg: str) -> None:
    """Report metadata corruption; a fatal one marks the image corrupt and
    makes the node unusable (later requests fail).

    Context: coroutine (it writes the header when fatal).
    QEMU: block/qcow2.c qcow2_signal_corruption.
    """
    s = bs.opaque
    fatal = fatal and not s.read_only
    if s.signaled_corruption and (not fatal or s.incompatible_features
                                  & QCOW2_INCOMPAT_CORRUPT):
        return
    if fatal:
        error_report("qcow2: Marking image as corrupt: %s; further corruption "
                     "events will be suppressed" % msg)
        qcow2_mark_corrupt(bs)
        s.disabled = True
    else:
        error_report("qcow2: Image is corrupt: %s; further non-fatal corruption"
                     " events will be suppressed" % msg)
    s.signaled_corruption = True


def qcow2_check_metadata_overlap(bs: Any, ign: int, offset: int, size: int) -> int:
    """The first kind of metadata that [offset, offset+size) overlaps, or 0.
    QEMU: qcow2_check_metadata_overlap."""
    s = bs.opaque
    chk = s.overlap_check & ~ign
    if not size:
        return 0
    cs = s.cluster_size
    end = (offset + size + cs - 1) & ~(cs - 1)
    offset &= ~(cs - 1)

    def ov(o: int, n: int) -> bool:
        return n > 0 and o < end and offset < o + n

    if chk & QCOW2_OL_MAIN_HEADER and offset < cs:
        return QCOW2_OL_MAIN_HEADER
    if chk & QCOW2_OL_ACTIVE_L1 and ov(s.l1_table_offset, s.l1_size * 8):
        return QCOW2_OL_ACTIVE_L1
    if chk & QCOW2_OL_REFCOUNT_TABLE and ov(s.refcount_table_offset,
                                            s.refcount_table_size * 8):
        return QCOW2_OL_REFCOUNT_TABLE
    if chk & QCOW2_OL_SNAPSHOT_TABLE and ov(s.snapshots_offset, s.snapshots_size):
        return QCOW2_OL_SNAPSHOT_TABLE
    if chk & QCOW2_OL_INACTIVE_L1:
        for sn in s.snapshots:
            if ov(sn.l1_table_offset, sn.l1_size * 8):
                return QCOW2_OL_INACTIVE_L1
    if chk & QCOW2_OL_ACTIVE_L2:
        for e in s.l1_table:
            l2 = e & L1E_OFFSET_MASK
            if l2 and ov(l2, cs):
                return QCOW2_OL_ACTIVE_L2
    if chk & QCOW2_OL_REFCOUNT_BLOCK:
        for e in s.refcount_table:
            rb = e & REFT_OFFSET_MASK
            if rb and ov(rb, cs):
                return QCOW2_OL_REFCOUNT_BLOCK
    return 0


def qcow2_pre_write_overlap_check(bs: Any, ign: int, offset: int, size: int) -> int:
    """Refuse a write over metadata: mark corrupt, return -EIO.
    Context: coroutine.  QEMU: qcow2_pre_write_overlap_check."""
    ret = qcow2_check_metadata_overlap(bs, ign, offset, size)
    if ret:
        kind = metadata_ol_names[ret.bit_length() - 1]
        qcow2_signal_corruption(bs, True, offset, size, "Preventing invalid "
                                "write on metadata (overlaps with %s)" % kind)
        return -EIO
    return 0


@coroutine_fn
def qcow2_mark_dirty(bs: Any) -> int:
    """Set the dirty bit on disk (after flushing) before lazy refcount
    updates.  QEMU: block/qcow2.c qcow2_mark_dirty."""
    s = bs.opaque
    if s.incompatible_features & QCOW2_INCOMPAT_DIRTY or s.qcow_version < 3:
        return 0
    ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    s.incompatible_features |= QCOW2_INCOMPAT_DIRTY
    ret = qcow2_write_incompat(bs)
    if ret < 0:
        s.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY
    return ret
