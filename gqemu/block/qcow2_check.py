"""qcow2 consistency check and repair (``qemu-img check``).

Recount every reference (header, L1/L2 of the active state and of each
snapshot, data and compressed clusters, snapshot table, refcount table and
blocks) into an in-memory table, compare it with the stored refcounts, check
the COPIED flags, and repair leaks (``BDRV_FIX_LEAKS``), too-low refcounts
and flags (``BDRV_FIX_ERRORS``), rebuilding the refcount structure when it
cannot be trusted.  Messages go to stderr with QEMU's wording.

The counting (``calculate_refcounts`` and the L1/L2 walk), the result
record ``BdrvCheckResult`` and the in-memory table ``_Imrt`` are
qcow2_calculate_refcounts.py's, below this module and qcow2_rebuild.py.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c qcow2_check_refcounts and helpers,
block/qcow2.c qcow2_co_check_locked.
"""
from __future__ import annotations

from errno import EFBIG, EIO
import os
import struct

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import bdrv_getlength
from gqemu.block.qcow2_cache import qcow2_cache_write
from gqemu.block.qcow2_calculate_refcounts import (
    BDRV_FIX_ERRORS, BDRV_FIX_LEAKS, BdrvCheckResult, _err, _Imrt, calculate_refcounts)
from gqemu.block.qcow2_check_bulk import (
    L2TableReader, RefblockReader, l2_copied_data_clusters, l2_table_entries)
from gqemu.block.qcow2_cluster import qcow2_write_l1_entry
from gqemu.block.qcow2_l2 import (
    QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC, qcow2_get_cluster_type)
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY,
    QCOW_OFLAG_COPIED)
from gqemu.block.qcow2_rebuild import _drop_cache, rebuild_refcount_structure
from gqemu.block.qcow2_overlap import (
    qcow2_co_flush_file, qcow2_co_pread_file, qcow2_co_pwrite_file,
    qcow2_pre_write_overlap_check, qcow2_write_incompat)
from gqemu.block.qcow2_state import QCOW2_DISCARD_ALWAYS, QCOW2_OL_ACTIVE_L2, Qcow2BDS
from gqemu.block.qcow2_refcount import qcow2_discard_unused, qcow2_get_refcount, update_refcount


@coroutine_fn
def compare_refcounts(bs: Qcow2BDS, res: BdrvCheckResult, fix: int, imrt: _Imrt) -> tuple[bool, int]:
    """QEMU: compare_refcounts.  Returns (rebuild, highest used cluster).
    A refcount block whose counts all match is compared in one step; any
    other goes cluster by cluster."""
    s = bs.opaque
    out: list = [False, 0]              # rebuild, highest
    counts = imrt.counts
    n, rbs = len(counts), s.refcount_block_size
    last_block = None                   # (first index, counts) of the last matching non-empty block
    blocks = RefblockReader(bs)
    for base in range(0, n, rbs):
        end = min(base + rbs, n)
        seg = counts[base:end]
        ret, values = blocks.values(base >> s.refcount_block_bits)
        if ret == 0 and (values[:end - base] == seg if values is not None else not any(seg)):
            if values is not None and any(seg):
                last_block = base, seg
            continue
        if ret < 0:                     # what qcow2_get_refcount(base) returned
            _err("Can't get refcount for cluster %d: %s" % (base, os.strerror(-ret)))
            res.check_errors += 1
            base += 1
        for i in range(base, end):
            if _compare_refcount(bs, res, fix, imrt, i, out):
                last_block = None
        blocks.invalidate()             # a repair may have changed refcounts
    for i in sorted(imrt.extra):
        if _compare_refcount(bs, res, fix, imrt, i, out):
            last_block = None
    if last_block is not None:
        base, seg = last_block
        out[1] = base + max(j for j, v in enumerate(seg) if v)
    return bool(out[0]), int(out[1])


@coroutine_fn
def _compare_refcount(bs: Qcow2BDS, res: BdrvCheckResult, fix: int, imrt: _Imrt, i: int,
                      out: list) -> bool:
    """Compare (and with ``fix`` repair) the refcount of cluster ``i``;
    out = [rebuild, highest].  Returns whether the cluster is in use."""
    s = bs.opaque
    ret, rc1 = qcow2_get_refcount(bs, i)
    if ret < 0:
        _err("Can't get refcount for cluster %d: %s" % (i, os.strerror(-ret)))
        res.check_errors += 1
        return False
    rc2 = imrt.get(i)
    used = bool(rc1 or rc2)
    if used:
        out[1] = i
    if rc1 == rc2:
        return used
    fixed = None
    if rc1 == 0:
        out[0] = True
    elif rc1 > rc2 and fix & BDRV_FIX_LEAKS:
        fixed = "leaks_fixed"
    elif rc1 < rc2 and fix & BDRV_FIX_ERRORS:
        fixed = "corruptions_fixed"
    _err("%s cluster %d refcount=%d reference=%d" % (
        "Repairing" if fixed else "ERROR" if rc1 < rc2 else "Leaked", i, rc1, rc2))
    if fixed:
        ret = update_refcount(bs, i << s.cluster_bits, 1, abs(rc1 - rc2), rc1 > rc2)
        if ret >= 0 and rc1 > rc2:
            qcow2_discard_unused(bs, i << s.cluster_bits, 1, QCOW2_DISCARD_ALWAYS)
        if ret >= 0:
            setattr(res, fixed, getattr(res, fixed) + 1)
            return used
    if rc1 < rc2:
        res.corruptions += 1
    else:
        res.leaks += 1
    return used


@coroutine_fn
def check_oflag_copied(bs: Qcow2BDS, res: BdrvCheckResult, fix: int) -> int:
    """QEMU: check_oflag_copied."""
    s = bs.opaque
    reader = L2TableReader(bs, s.l1_table)
    peek = RefblockReader(bs)           # check_oflag_copied changes no refcount
    cb = s.cluster_bits
    if fix & BDRV_FIX_ERRORS:
        repair = True
    else:       # with only leaks fixed, when the refcounts are now known good
        repair = bool(fix & BDRV_FIX_LEAKS) and not (res.check_errors or res.corruptions
                                                     or res.leaks)
    verb = "Repairing" if repair else "ERROR"
    for i, e in enumerate(s.l1_table):
        l2_offset = e & L1E_OFFSET_MASK
        if not l2_offset:
            continue
        ret, rc = peek.get(l2_offset >> cb)
        if ret < 0:
            continue
        if (rc == 1) != bool(e & QCOW_OFLAG_COPIED):
            res.corruptions += 1
            _err("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d"
                 % (verb, i, e, rc))
            if repair:
                s.l1_table[i] = e | QCOW_OFLAG_COPIED if rc == 1 else e & ~QCOW_OFLAG_COPIED
                ret = qcow2_write_l1_entry(bs, i)
                if ret < 0:
                    res.check_errors += 1
                    return ret
                res.corruptions -= 1
                res.corruptions_fixed += 1
        if l2_offset & (s.cluster_size - 1):
            continue
        ret, raw, entries = reader.read(i, l2_offset)
        if ret < 0:
            _err("ERROR: Could not read L2 table: %s" % os.strerror(-ret))
            res.check_errors += 1
            return ret
        if entries is None:
            run = l2_copied_data_clusters(s, raw)
            if run is not None and (not run[1] or peek.all_one(*run)):
                continue                # every data cluster has COPIED and refcount 1
            entries = l2_table_entries(s, raw)
        dirty = 0
        esz = s.l2_entry_size
        l2 = None
        for j, ent, _bm in entries:
            t = qcow2_get_cluster_type(s.extended_l2, ent, s.has_data_file)
            if t not in (QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC):
                continue
            # a data file cluster has no refcount here: it counts as 1
            ret, rc = (0, 1) if s.has_data_file else peek.get((ent & L2E_OFFSET_MASK) >> cb)
            if ret < 0:
                continue
            if (rc == 1) != bool(ent & QCOW_OFLAG_COPIED):
                res.corruptions += 1
                _err("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d" % (verb, ent, rc))
                if repair:
                    if l2 is None:
                        ret, l2 = qcow2_co_pread_file(bs, l2_offset, s.cluster_size)
                        if ret < 0:
                            res.check_errors += 1
                            return ret
                    new = ent | QCOW_OFLAG_COPIED if rc == 1 else ent & ~QCOW_OFLAG_COPIED
                    struct.pack_into(">Q", l2, j * esz, new)
                    dirty += 1
        if dirty and l2 is not None:
            reader.forget(l2_offset)
            ret = qcow2_pre_write_overlap_check(bs, QCOW2_OL_ACTIVE_L2, l2_offset, s.cluster_size)
            if ret >= 0:
                ret = qcow2_co_pwrite_file(bs, l2_offset, l2)
            if ret < 0:
                _err("ERROR: Could not write L2 table: %s" % os.strerror(-ret))
                res.check_errors += 1
                return ret
            res.corruptions -= dirty
            res.corruptions_fixed += dirty
    return 0


@coroutine_fn
def qcow2_check_refcounts(bs: Qcow2BDS, res: BdrvCheckResult, fix: int) -> int:
    """QEMU: qcow2_check_refcounts."""
    s = bs.opaque
    size = bdrv_getlength(bs.file.bs)
    if size < 0:
        res.check_errors += 1
        return size
    nb_clusters = (size + s.cluster_size - 1) >> s.cluster_bits
    if nb_clusters > (1 << 31):
        res.check_errors += 1
        return -EFBIG
    res.total_clusters = (bs.total_sectors * 512 + s.cluster_size - 1) >> s.cluster_bits
    ret, imrt, rebuild = calculate_refcounts(bs, res, nb_clusters, fix)
    if ret < 0:
        return ret
    pre = vars(res).copy()
    rb2, highest = compare_refcounts(bs, res, 0, imrt)
    rebuild = rebuild or rb2
    if rebuild and fix & BDRV_FIX_ERRORS:
        _err("Rebuilding refcount structure")
        ret = rebuild_refcount_structure(bs, res, imrt)
        if ret < 0:
            res.check_errors += 1
            return ret
        # the references are counted again over the new tables; what is
        # still wrong (e.g. an unaligned entry) stays counted, the rest is
        # fixed; leaks the rebuild itself left are repaired and reported
        old_corruptions, old_leaks = res.corruptions, res.leaks
        res.corruptions = res.leaks = 0
        size = bdrv_getlength(bs.file.bs)
        # the in-memory table the rebuild grew (QEMU keeps its nb_clusters)
        nb_clusters = max((size + s.cluster_size - 1) >> s.cluster_bits, len(imrt.counts))
        ret, imrt, _ = calculate_refcounts(bs, res, nb_clusters)
        if ret < 0:
            return ret
        fresh_leaks = 0
        if fix & BDRV_FIX_LEAKS:
            res3 = BdrvCheckResult()
            rb3, highest = compare_refcounts(bs, res3, BDRV_FIX_LEAKS, imrt)
            if rb3:
                _err("ERROR rebuilt refcount structure is still broken")
            fresh_leaks = res3.leaks
        if res.corruptions < old_corruptions:
            res.corruptions_fixed += old_corruptions - res.corruptions
        if res.leaks < old_leaks:
            res.leaks_fixed += old_leaks - res.leaks
        res.leaks += fresh_leaks
    elif fix:
        if rebuild:
            _err("ERROR need to rebuild refcount structures")
            res.check_errors += 1
            return -EIO
        if res.leaks or res.corruptions:
            vars(res).update(pre)
            _, highest = compare_refcounts(bs, res, fix, imrt)
    ret = check_oflag_copied(bs, res, fix)
    if ret < 0:
        return ret
    res.image_end_offset = (highest + 1) * s.cluster_size
    return 0


@coroutine_fn
def qcow2_co_check(bs: Qcow2BDS, fix: int) -> BdrvCheckResult:
    """Check (and with ``fix`` repair) the image; on a clean result with
    ``fix``, clear the dirty and corrupt bits.
    Context: coroutine.  QEMU: qcow2_co_check_locked."""
    s = bs.opaque
    res = BdrvCheckResult()
    if not s.read_only:
        for c in (s.l2_table_cache, s.refcount_block_cache):
            ret = qcow2_cache_write(bs, c)
            if ret < 0:
                res.ret = ret
                return res
    from gqemu.block.qcow2_snapshot_table import (      # it imports the snapshot code
        qcow2_check_fix_snapshot_table, qcow2_check_read_snapshot_table)
    sn_res = BdrvCheckResult()
    ret = qcow2_check_read_snapshot_table(bs, sn_res, fix)
    if ret >= 0:
        ret = qcow2_check_refcounts(bs, res, fix)
        _drop_cache(s.l2_table_cache)
    if ret >= 0:
        ret = qcow2_check_fix_snapshot_table(bs, sn_res, fix)
    for k in ("corruptions", "leaks", "check_errors", "corruptions_fixed", "leaks_fixed"):
        setattr(res, k, getattr(res, k) + getattr(sn_res, k))
    if ret >= 0 and fix and not res.check_errors and not res.corruptions and not s.read_only:
        if s.incompatible_features & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT):
            ret = qcow2_cache_write(bs, s.refcount_block_cache)
            if ret >= 0:
                ret = qcow2_co_flush_file(bs)
            s.incompatible_features &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)
            if ret >= 0:
                ret = qcow2_write_incompat(bs)
    res.ret = min(ret, 0)
    return res
