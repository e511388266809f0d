"""qcow2 metadata file I/O and its protection: reads, writes and flushes of
the image file on behalf of metadata, the overlap checks that refuse a write
over metadata, corruption signalling (the corrupt bit, the node made
unusable), and the dirty bit of lazy refcounts.

A write can signal corruption, and signalling corruption writes the header,
so both live here; the metadata cache (qcow2_cache) sits above and calls
down into this module.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, any gqemu.block.qcow2*
module other than qcow2_header and qcow2_state.

QEMU: block/qcow2-refcount.c qcow2_check_metadata_overlap /
qcow2_pre_write_overlap_check; block/qcow2.c qcow2_signal_corruption,
qcow2_mark_corrupt, qcow2_mark_dirty; bdrv_co_pread/pwrite(bs->file).
"""
from __future__ import annotations

from collections import Counter
from errno import EFBIG, EINVAL, EIO
from itertools import compress
from operator import is_not
import struct
import sys
from typing import Any

from gqemu.coroutine import coroutine_fn
import gqemu.block.io as _io
from gqemu.block.io_misc import bdrv_co_flush
from gqemu.block.driver import bdrv_getlength
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, QCOW2_AUTOCLEAR_BITMAPS, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY,
    QCOW_MAX_L1_SIZE, REFT_OFFSET_MASK, c_hex)
from gqemu.block.qcow2_state import (
    BDRV_MAX_LENGTH, QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_BITMAP_DIRECTORY,
    QCOW2_OL_INACTIVE_L1, QCOW2_OL_INACTIVE_L2,
    QCOW2_OL_MAIN_HEADER, QCOW2_OL_REFCOUNT_BLOCK,
    QCOW2_OL_REFCOUNT_TABLE, QCOW2_OL_SNAPSHOT_TABLE, Qcow2BDS, metadata_ol_names)


@coroutine_fn
def qcow2_co_pread_file(bs: Qcow2BDS, offset: int, nbytes: int) -> tuple[int, bytearray]:
    """Read ``nbytes`` of the image file at ``offset`` (short reads zero-fill).

    Context: coroutine.  Returns: (ret, buffer), ret < 0 is -errno.
    QEMU: bdrv_co_pread(bs->file, ...).
    """
    buf = bytearray(nbytes)
    if offset < 0 or offset + nbytes > BDRV_MAX_LENGTH:
        return -EIO, buf
    qiov = qemu_iovec_init_buf(buf)
    ret = _io.bdrv_co_preadv(bs.file, offset, nbytes, qiov, 0)
    return ret, buf


@coroutine_fn
def qcow2_co_pwrite_file(bs: Qcow2BDS, offset: int, data: Any, flags: int = 0) -> int:
    """Write ``data`` to the image file.  Context: coroutine.
    Returns: 0 or -errno.  QEMU: bdrv_co_pwrite(bs->file, ...)."""
    if offset < 0 or offset + len(data) > BDRV_MAX_LENGTH:
        return -EIO
    s = bs.opaque
    end = offset + len(data)
    if end > getattr(s, "highest_alloc", 0):
        flen = qcow2_file_length(bs)
        if flen >= 0 and end > max(flen, s.highest_alloc):
            # metadata beyond everything allocated: a corrupted pointer, and
            # following it would grow the file without bound (T23)
            qcow2_signal_corruption(bs, True, offset, len(data), "Preventing metadata "
                                    "write at offset %s beyond the end of the image file"
                                    % c_hex(offset))
            return -EIO
    qiov = qemu_iovec_init_buf(data)
    ret = _io.bdrv_co_pwritev(bs.file, offset, len(data), qiov, flags)
    return min(ret, 0)


@coroutine_fn
def qcow2_co_flush_file(bs: Qcow2BDS) -> int:
    """Flush the image file.  Context: coroutine.  Returns: 0 or -errno.
    QEMU: bdrv_flush(bs->file->bs)."""
    return bdrv_co_flush(bs.file.bs)


def qcow2_file_length(bs: Qcow2BDS) -> int:
    """Current length of the image file (or -errno)."""
    return bdrv_getlength(bs.file.bs)


def error_report(msg: str) -> None:
    """QEMU's error_report: one line on stderr."""
    sys.stderr.write(msg + "\n")


@coroutine_fn
def qcow2_write_incompat(bs: Qcow2BDS) -> int:
    """Write the incompatible-features field (offset 72) and flush."""
    s = bs.opaque
    ret = qcow2_co_pwrite_file(bs, 72, struct.pack(">Q", s.incompatible_features))
    if ret < 0:
        return ret
    return qcow2_co_flush_file(bs)


@coroutine_fn
def qcow2_mark_corrupt(bs: Qcow2BDS) -> int:
    """Set the corrupt bit on disk.  QEMU: block/qcow2.c qcow2_mark_corrupt."""
    s = bs.opaque
    s.incompatible_features |= QCOW2_INCOMPAT_CORRUPT
    if s.qcow_version < 3:
        return 0
    return qcow2_write_incompat(bs)


def qcow2_take_out_of_service(bs: Qcow2BDS) -> None:
    """The node stops serving: later requests fail with ENOMEDIUM at the
    block layer and closing it writes nothing back.  ``s.disabled`` tells
    the requests already inside the driver.  QEMU: ``bs->drv = NULL``."""
    bs.opaque.disabled = True
    bs.drv = None


def qcow2_signal_corruption(bs: Qcow2BDS, fatal: bool, offset: int, size: int,
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
        qcow2_take_out_of_service(bs)
    else:
        error_report("qcow2: Image is corrupt: %s; further non-fatal corruption"
                     " events will be suppressed" % msg)
    s.signaled_corruption = True


class _TableIndex:
    """What one table's entries point to, for the overlap check: a copy of
    the table, {cluster: number of entries pointing to it} and the number
    of entries pointing to an unaligned offset."""

    __slots__ = ("copy", "counts", "unaligned")

    def __init__(self, table: list[int], mask: int, m: int) -> None:
        counts = Counter(map(mask.__and__, table))
        counts.pop(0, None)
        self.copy = list(table)
        self.counts: dict[int, int] = counts
        self.unaligned = sum(map(counts.__getitem__, filter(m.__and__, counts)))

    def count(self, e: int, d: int, mask: int, m: int) -> None:
        """Count entry ``e``'s target in (``d`` = 1) or out (-1)."""
        o = e & mask
        if not o:
            return
        counts = self.counts
        c = counts.get(o, 0) + d
        if c:
            counts[o] = c
        else:
            del counts[o]
        if o & m:
            self.unaligned += d


def _table_targets(s: Any, key: str, table: list[int], mask: int) -> _TableIndex:
    """The index of ``table``, kept on ``s.overlap_sets`` and brought up
    to date.  Speed only: a table can have millions of entries, and a
    Python loop over them per metadata write is seconds.  When the table
    differs from the copy, the changed entries are found at C speed
    (``map(is_not, ...)``) and only they are counted out and in, so an L2
    or refblock allocation costs Python work for one entry, not for the
    whole table (a rebuild per allocation made preallocation quadratic);
    a table that changed in more than an eighth of its entries is indexed
    anew."""
    m = s.cluster_size - 1
    idx = s.overlap_sets.get(key)
    if idx is not None:
        old = idx.copy
        if old == table:                # identical entries: ~1 ns each
            return idx
        n = min(len(old), len(table))
        changed = list(compress(range(n), map(is_not, old, table)))
        if len(changed) + abs(len(old) - len(table)) <= (n >> 3) + 64:
            for i in changed:
                idx.count(old[i], -1, mask, m)
                idx.count(table[i], 1, mask, m)
                old[i] = table[i]
            for e in old[n:]:
                idx.count(e, -1, mask, m)
            for e in table[n:]:
                idx.count(e, 1, mask, m)
            old[n:] = table[n:]
            return idx
    idx = s.overlap_sets[key] = _TableIndex(table, mask, m)
    return idx


def _table_overlaps(s: Any, key: str, table: list[int], mask: int, offset: int,
                    end: int, ov: Any) -> bool:
    """Whether a cluster that an entry of ``table`` points to overlaps the
    cluster-aligned [offset, end) (entries masked with ``mask``, 0 = none).
    QEMU: the l1_table / refcount_table loops of qcow2_check_metadata_overlap."""
    cs = s.cluster_size
    idx = _table_targets(s, key, table, mask)
    offs = idx.counts
    if idx.unaligned:                   # an unaligned entry (corrupt image)
        return any(ov(o, cs) for o in offs)
    if (end - offset) // cs <= len(offs):
        return any(c in offs for c in range(offset, end, cs))
    return any(offset <= o < end for o in offs)


def qcow2_check_metadata_overlap(bs: Qcow2BDS, ign: int, offset: int, size: int) -> int:
    """The first kind of metadata that [offset, offset+size) overlaps, 0, or
    -errno (reading a snapshot's L1 table for the inactive-L2 check failed).
    Context: coroutine when the inactive-L2 check is on.
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
    if chk & QCOW2_OL_ACTIVE_L2 and _table_overlaps(s, "l1", s.l1_table,
                                                    L1E_OFFSET_MASK, offset, end, ov):
        return QCOW2_OL_ACTIVE_L2
    if chk & QCOW2_OL_REFCOUNT_BLOCK and _table_overlaps(s, "reft", s.refcount_table,
                                                         REFT_OFFSET_MASK, offset, end, ov):
        return QCOW2_OL_REFCOUNT_BLOCK
    if chk & QCOW2_OL_INACTIVE_L2:
        # the snapshots' L1 tables are read from the file (only overlap-check=all)
        for sn in s.snapshots:
            if sn.l1_size > QCOW_MAX_L1_SIZE // 8:          # qcow2_validate_table
                return -EFBIG
            if sn.l1_table_offset & (cs - 1) or \
                    sn.l1_table_offset > (1 << 63) - 1 - sn.l1_size * 8:
                return -EINVAL
            ret, buf = qcow2_co_pread_file(bs, sn.l1_table_offset, sn.l1_size * 8)
            if ret < 0:
                return ret
            for e in filter(None, struct.unpack(">%dQ" % sn.l1_size, buf)):
                l2 = e & L1E_OFFSET_MASK
                if l2 and ov(l2, cs):
                    return QCOW2_OL_INACTIVE_L2
    if chk & QCOW2_OL_BITMAP_DIRECTORY and s.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS \
            and _ranges_overlap(offset, end - offset, s.bitmap_directory_offset,
                                s.bitmap_directory_size):
        return QCOW2_OL_BITMAP_DIRECTORY
    return 0


def _ranges_overlap(first1: int, len1: int, first2: int, len2: int) -> bool:
    """QEMU's ranges_overlap, in uint64_t: a range's last byte is
    first + len - 1, so an empty range at 0 (a bitmaps bit with no
    bitmaps extension) overlaps everything, as it does in QEMU."""
    u64 = (1 << 64) - 1
    last1 = (first1 + len1 - 1) & u64
    last2 = (first2 + len2 - 1) & u64
    return not (last2 < first1 or last1 < first2)


def qcow2_pre_write_overlap_check(bs: Qcow2BDS, ign: int, offset: int, size: int) -> int:
    """Refuse a write over metadata: mark corrupt, return -EIO.
    Context: coroutine.  QEMU: qcow2_pre_write_overlap_check."""
    ret = qcow2_check_metadata_overlap(bs, ign, offset, size)
    if ret < 0:
        return ret
    if ret:
        kind = metadata_ol_names[ret.bit_length() - 1]
        qcow2_signal_corruption(bs, True, offset, size, "Preventing invalid "
                                "write on metadata (overlaps with %s)" % kind)
        return -EIO
    return 0


@coroutine_fn
def qcow2_mark_dirty(bs: Qcow2BDS) -> int:
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


