"""qcow2 check, first half: counting every reference (``qemu-img check``).

The check's result record and the in-memory refcount table (``_Imrt``),
then the walk that fills that table: the header, L1/L2 tables of the
active state and of each snapshot, data and compressed clusters, the
snapshot table, refcount table and blocks, fixing what can be fixed on the
way (unaligned zero entries, refcount blocks outside the file).  The
comparison with the stored refcounts, the COPIED flags and the repair are
qcow2_check.py's, above this module and qcow2_rebuild.py.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2,
gqemu.block.qcow2_check, gqemu.block.qcow2_rebuild.

QEMU: block/qcow2-refcount.c qcow2_inc_refcounts_imrt, check_refcounts_l2,
check_refcounts_l1, check_refblocks, calculate_refcounts; include/block/block.h
BdrvCheckResult, BdrvCheckMode.
"""
from __future__ import annotations

from errno import EFBIG, EINVAL
import os
import struct
import sys
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import bdrv_getlength
from gqemu.block.qcow2_check_bulk import L2TableReader, l2_count_fast, l2_table_entries
from gqemu.block.qcow2_l2 import (
    QCOW2_CLUSTER_COMPRESSED, QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_ALLOC, qcow2_get_cluster_type)
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, L1E_RESERVED_MASK, L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK,
    QCOW_L2_BITMAP_ALL_ALLOC, QCOW_L2_BITMAP_ALL_ZEROES,
    QCOW_MAX_L1_SIZE, QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO, REFT_OFFSET_MASK,
    REFT_RESERVED_MASK)
from gqemu.block.qcow2_overlap import (
    qcow2_co_flush_file, qcow2_co_pread_file, qcow2_co_pwrite_file,
    qcow2_pre_write_overlap_check)
from gqemu.block.qcow2_state import (QCOW2_OL_ACTIVE_L2, QCOW2_OL_INACTIVE_L2, Qcow2BDS,
                                     Qcow2State)
from gqemu.block.qcow2_refcount import qcow2_parse_compressed_l2_entry

BDRV_FIX_LEAKS = 1
BDRV_FIX_ERRORS = 2
CHECK_FRAG_INFO = 2


class BdrvCheckResult:
    """QEMU: BdrvCheckResult (plus ``ret``, the check's own status)."""

    def __init__(self) -> None:
        self.corruptions = self.leaks = self.check_errors = 0
        self.corruptions_fixed = self.leaks_fixed = 0
        self.image_end_offset = 0
        self.total_clusters = self.allocated_clusters = 0
        self.fragmented_clusters = self.compressed_clusters = 0
        self.ret = 0


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


class _Imrt:
    """The in-memory refcount table being rebuilt: a list over the file's
    clusters, and a dict for references past its end (so a corrupted
    pointer costs one entry, not a table the size of the pointer)."""

    def __init__(self, s: Qcow2State, n: int, file_len: int) -> None:
        self.s = s
        self.counts = [0] * n
        self.extra: dict[int, int] = {}
        self.file_len = file_len

    def get(self, k: int) -> int:
        return self.counts[k] if k < len(self.counts) else self.extra.get(k, 0)

    def nonzero(self) -> list[int]:
        return [k for k, v in enumerate(self.counts) if v] + sorted(self.extra)

    def indices(self) -> list[int]:
        return list(range(len(self.counts))) + sorted(self.extra)

    def inc(self, res: BdrvCheckResult, offset: int, size: int) -> None:
        """QEMU: qcow2_inc_refcounts_imrt."""
        if size <= 0:
            return
        s = self.s
        cb = s.cluster_bits
        # the last cluster may reach a little past the end of the file, but
        # not a whole cluster (T31)
        if offset + size - self.file_len >= s.cluster_size:
            _err("ERROR: counting reference for region exceeding the end of the file by "
                 "one cluster or more: offset 0x%x size 0x%x" % (offset, size))
            res.corruptions += 1
            return
        first, last = offset >> cb, (offset + size - 1) >> cb
        n = len(self.counts)
        for k in range(first, last + 1):
            v = self.counts[k] if k < n else self.extra.get(k, 0)
            if v >= s.refcount_max:
                _err("ERROR: overflow cluster offset=0x%x" % (k << cb))
                _err("Use qemu-img amend to increase the refcount entry width or "
                     "qemu-img convert to create a clean copy if the image cannot be "
                     "opened for writing")
                res.corruptions += 1
                continue
            if k < n:
                self.counts[k] = v + 1
            else:
                self.extra[k] = v + 1


@coroutine_fn
def _fix_l2_entry_by_zero(bs: Qcow2BDS, res: BdrvCheckResult, l2_offset: int, i: int,
                          bitmap: int, active: bool) -> tuple[int, int, int]:
    """Make an entry with an unaligned offset but no data read as zero:
    (ret, new entry, new bitmap); ret -EIO with the entry unchanged on a
    metadata overlap.  QEMU: fix_l2_entry_by_zero."""
    s = bs.opaque
    if s.extended_l2:
        ent, bitmap = 0, (bitmap | bitmap << 32) & QCOW_L2_BITMAP_ALL_ZEROES
        data = struct.pack(">QQ", ent, bitmap)
    else:
        ent, data = QCOW_OFLAG_ZERO, struct.pack(">Q", QCOW_OFLAG_ZERO)
    off = l2_offset + i * len(data)
    ret = qcow2_pre_write_overlap_check(
        bs, QCOW2_OL_ACTIVE_L2 if active else QCOW2_OL_INACTIVE_L2, off, len(data))
    if ret < 0:
        _err("ERROR: Overlap check failed")
        res.check_errors += 1
        return ret, ent, bitmap
    ret = qcow2_co_pwrite_file(bs, off, data)
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        _err("ERROR: Failed to overwrite L2 table entry: %s" % os.strerror(-ret))
        res.check_errors += 1
        return 1, ent, bitmap               # not fixed, go on with this table
    res.corruptions -= 1
    res.corruptions_fixed += 1
    return 0, ent, bitmap


@coroutine_fn
def check_refcounts_l2(bs: Qcow2BDS, res: BdrvCheckResult, imrt: _Imrt, l2_offset: int,
                       flags: int, reader: L2TableReader, l1_index: int, fix: int = 0,
                       active: bool = False) -> int:
    """QEMU: check_refcounts_l2."""
    s = bs.opaque
    ret, raw, entries = reader.read(l1_index, l2_offset)
    if ret < 0:
        _err("ERROR: I/O error in check_refcounts_l2")
        res.check_errors += 1
        return ret
    if entries is None:
        if l2_count_fast(s, raw, res, imrt, flags):
            return 0
        entries = l2_table_entries(s, raw)
    next_contiguous = 0
    for k, (i, ent, bitmap) in enumerate(entries):
        t = qcow2_get_cluster_type(s.extended_l2, ent, s.has_data_file)
        if t != QCOW2_CLUSTER_COMPRESSED and ent & (L2E_STD_RESERVED_MASK | (
                QCOW_OFLAG_ZERO if s.extended_l2 else 0)):
            _err("ERROR found l2 entry with reserved bits set: %x" % ent)
            res.corruptions += 1
        if t == QCOW2_CLUSTER_COMPRESSED:
            if ent & QCOW_OFLAG_COPIED:
                _err("ERROR: coffset=0x%x: copied flag must never be set for compressed "
                     "clusters" % (ent & s.cluster_offset_mask))
                ent &= ~QCOW_OFLAG_COPIED
                res.corruptions += 1
            if s.has_data_file:
                _err("ERROR compressed cluster %d with data file, entry=0x%x" % (i, ent))
                res.corruptions += 1
                continue
            if bitmap:
                _err("ERROR compressed cluster %d with non-zero subcluster allocation "
                     "bitmap, entry=0x%x" % (i, ent))
                res.corruptions += 1
                continue
            coffset, csize = qcow2_parse_compressed_l2_entry(s, ent)
            imrt.inc(res, coffset, csize)
            if flags & CHECK_FRAG_INFO:
                res.allocated_clusters += 1
                res.compressed_clusters += 1
                res.fragmented_clusters += 1
        elif t in (QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC):
            off = ent & L2E_OFFSET_MASK
            if (bitmap >> 32) & bitmap:
                res.corruptions += 1
                _err("ERROR offset=%x: Allocated cluster has corrupted subcluster "
                     "allocation bitmap" % off)
            if flags & CHECK_FRAG_INFO:
                res.allocated_clusters += 1
                if next_contiguous and off != next_contiguous:
                    res.fragmented_clusters += 1
                next_contiguous = off + s.cluster_size
            if off & (s.cluster_size - 1):
                res.corruptions += 1
                data = bitmap & QCOW_L2_BITMAP_ALL_ALLOC if s.extended_l2 else \
                    not ent & QCOW_OFLAG_ZERO
                if data:
                    _err("ERROR offset=%x: Data cluster is not properly aligned; L2 entry "
                         "corrupted." % off)
                else:
                    _err("%s offset=%x: Preallocated cluster is not properly aligned; "
                         "L2 entry corrupted." % ("Repairing" if fix & BDRV_FIX_ERRORS
                                                  else "ERROR", off))
                    if fix & BDRV_FIX_ERRORS:
                        ret, new, nbm = _fix_l2_entry_by_zero(bs, res, l2_offset, i, bitmap,
                                                              active)
                        if ret < 0:
                            return ret      # a metadata overlap: stop this table
                        if ret == 0:
                            entries[k] = (i, new, nbm)      # a memoized table too
                            continue        # the cluster is not used any more
            if not s.has_data_file:       # data file clusters have no refcount
                imrt.inc(res, off, s.cluster_size)
        elif t == QCOW2_CLUSTER_UNALLOCATED and bitmap & QCOW_L2_BITMAP_ALL_ALLOC:
            res.corruptions += 1
            _err("ERROR: Unallocated cluster has non-zero subcluster allocation map")
    return 0


def _file_bytes(bs: Qcow2BDS) -> int:
    """The image file's length in bytes (bdrv_getlength rounds it up to a
    sector, which would hide a table cut short inside its last sector)."""
    node: Any = bs.file.bs                  # any protocol driver
    return node.drv.bdrv_getlength(node)


@coroutine_fn
def check_refcounts_l1(bs: Qcow2BDS, res: BdrvCheckResult, imrt: _Imrt, l1_offset: int,
                       l1_size: int, flags: int,
                       l1: list[int] | None = None, fix: int = 0,
                       active: bool = False) -> int:
    """QEMU: check_refcounts_l1."""
    s = bs.opaque
    imrt.inc(res, l1_offset, l1_size * 8)
    if not l1_size:                     # nothing to read (QEMU: l1_size2 == 0)
        return 0
    flen = _file_bytes(bs)
    if l1_size and flen >= 0 and l1_offset + l1_size * 8 > flen:
        # QEMU reads the missing part as zeroes and reports nothing; an L1
        # table that is not (all) in the file has lost its L2 references
        _err("ERROR l1_offset=%#x: L1 table (%d entries) is beyond the end of the "
             "image file (%#x)" % (l1_offset, l1_size, flen))
        res.corruptions += 1
        return 0
    if l1 is None:
        ret, buf = qcow2_co_pread_file(bs, l1_offset, l1_size * 8)
        if ret < 0:
            _err("ERROR: I/O error in check_refcounts_l1")
            res.check_errors += 1
            return ret
        l1 = list(struct.unpack(">%dQ" % l1_size, buf))
    reader = L2TableReader(bs, l1)
    for l1_index, e in enumerate(l1):
        if not e:
            continue
        if e & L1E_RESERVED_MASK:
            _err("ERROR found L1 entry with reserved bits set: %x" % e)
            res.corruptions += 1
        l2_offset = e & L1E_OFFSET_MASK
        imrt.inc(res, l2_offset, s.cluster_size)
        if l2_offset & (s.cluster_size - 1):
            _err("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted"
                 % l2_offset)
            res.corruptions += 1
        ret = check_refcounts_l2(bs, res, imrt, l2_offset, flags, reader, l1_index, fix,
                                 active)
        if ret < 0:
            return ret
    return 0


@coroutine_fn
def _grow_file_to_cover(bs: Qcow2BDS, off: int) -> tuple[int, int]:
    """Grow the image file (sparse) so that the refblock at ``off`` lies
    inside it.  Returns (0 or -errno, the file's clusters now).  QEMU: the
    "is outside image" repair of check_refblocks.  gqemu bounds the growth
    (EFBIG) at the current length plus the virtual size: no refblock of a
    sound image lies further out, and a corrupted pointer must not make a
    file of any size it names (QEMU grows to 64 GiB in iotest 060)."""
    s = bs.opaque
    from gqemu.block.io_truncate import bdrv_co_truncate
    if off > (1 << 63) - 1 - s.cluster_size:
        return -EINVAL, 0
    flen = bdrv_getlength(bs.file.bs)
    if flen < 0:
        return flen, 0
    if off + s.cluster_size > flen + bs.total_sectors * 512:
        return -EFBIG, 0
    ret, msg = bdrv_co_truncate(bs.file.bs, off + s.cluster_size, exact=False)
    if ret < 0:
        if msg:
            _err(msg)
        return ret, 0
    size = bdrv_getlength(bs.file.bs)
    if size < 0:
        return size, 0
    n = (size + s.cluster_size - 1) >> s.cluster_bits
    if off >> s.cluster_bits >= n:
        return -EINVAL, 0
    return 0, n


@coroutine_fn
def calculate_refcounts(bs: Qcow2BDS, res: BdrvCheckResult, nb_clusters: int,
                        fix: int = 0) -> tuple[int, _Imrt, bool]:
    """QEMU: calculate_refcounts + check_refblocks.  Returns (ret, imrt, rebuild)."""
    s = bs.opaque
    imrt = _Imrt(s, nb_clusters, bdrv_getlength(bs.file.bs))
    imrt.inc(res, 0, s.cluster_size)
    ret = check_refcounts_l1(bs, res, imrt, s.l1_table_offset, s.l1_size, CHECK_FRAG_INFO,
                             list(s.l1_table), fix, True)
    if ret < 0:
        return ret, imrt, False
    if s.has_data_file and s.snapshots:
        _err("ERROR %d snapshots in image with data file" % len(s.snapshots))
        res.corruptions += 1
    for sn in s.snapshots:
        if sn.l1_table_offset & (s.cluster_size - 1):
            _err("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; "
                 "snapshot table entry corrupted" % (sn.id_str, sn.name, sn.l1_table_offset))
            res.corruptions += 1
            continue
        if sn.l1_size > QCOW_MAX_L1_SIZE // 8:
            _err("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot "
                 "table entry corrupted" % (sn.id_str, sn.name, sn.l1_size))
            res.corruptions += 1
            continue
        ret = check_refcounts_l1(bs, res, imrt, sn.l1_table_offset, sn.l1_size, 0,
                                 None, fix, False)
        if ret < 0:
            return ret, imrt, False
    imrt.inc(res, s.snapshots_offset, s.snapshots_size)
    imrt.inc(res, s.refcount_table_offset, s.refcount_table_size * 8)
    from gqemu.block.qcow2_bitmap import qcow2_check_bitmaps_refcounts
    ret = qcow2_check_bitmaps_refcounts(bs, res, imrt.inc)
    if ret < 0:
        return ret, imrt, False
    rebuild = False
    for i, e in enumerate(s.refcount_table):
        off = e & REFT_OFFSET_MASK
        if e & REFT_RESERVED_MASK:
            _err("ERROR refcount table entry %d has reserved bits set" % i)
            res.corruptions += 1
            rebuild = True
            continue
        if off & (s.cluster_size - 1):
            _err("ERROR refcount block %d is not cluster aligned; refcount table entry "
                 "corrupted" % i)
            res.corruptions += 1
            rebuild = True
            continue
        if off and (off >> s.cluster_bits) >= nb_clusters:
            res.corruptions += 1
            if not fix & BDRV_FIX_ERRORS:
                _err("ERROR refcount block %d is outside image" % i)
                continue
            _err("Repairing refcount block %d is outside image" % i)
            ret, grown = _grow_file_to_cover(bs, off)
            if ret < 0:
                _err("ERROR could not resize image: %s" % os.strerror(-ret))
                rebuild = True
                continue
            nb_clusters = grown
            imrt.file_len = grown << s.cluster_bits
            res.corruptions -= 1
            res.corruptions_fixed += 1
            imrt.inc(res, off, s.cluster_size)
            continue
        if off:
            imrt.inc(res, off, s.cluster_size)
            rc = imrt.get(off >> s.cluster_bits)
            if rc != 1:
                _err("ERROR refcount block %d refcount=%d" % (i, rc))
                res.corruptions += 1
                rebuild = True
    return 0, imrt, rebuild
