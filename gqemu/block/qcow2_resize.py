"""qcow2 truncate: grow (the L1 table to its exact new size, the header's
size field) and shrink (drop the clusters past the new end, free L2 tables
past the new L1 size, cut the file after its last used cluster).

Growing with ``metadata`` preallocation allocates a host cluster for every
new guest cluster and grows the file to hold them; ``falloc``/``full`` do
the same and then preallocate the file's new part that way (QEMU instead
allocates the data area in one piece first, so host offsets differ).

Context: coroutine; takes ``s.lock``.  Returns (0 or -errno, message).
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (qcow2_co_truncate), block/qcow2-cluster.c
(qcow2_shrink_l1_table), block/qcow2-refcount.c (qcow2_get_last_cluster).
"""
from __future__ import annotations

import errno
import os
import struct

from gqemu.coroutine import coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock
from gqemu.block.blkdebug_events import (BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS,
                                         BLKDBG_L1_SHRINK_WRITE_TABLE)
from gqemu.block.block_int import BlockError, warn_report
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.io import bdrv_co_pwrite_zeroes
from gqemu.block.qiov import QEMUIOVector
from gqemu.block.qcow2_cache import (
    qcow2_cache_discard, qcow2_cache_entry_mark_dirty, qcow2_cache_flush,
    qcow2_cache_get, qcow2_cache_put)
from gqemu.block.qcow2_overlap import (
    qcow2_signal_corruption, qcow2_co_flush_file, qcow2_co_pwrite_file, qcow2_file_length)
from gqemu.block.qcow2_cluster import (
    get_cluster_table, qcow2_grow_l1_table)
from gqemu.block.qcow2_options import qcow2_update_options
from gqemu.block.qcow2_zero import qcow2_cluster_discard, qcow2_subcluster_zeroize
from gqemu.block.qcow2_prealloc import (qcow2_co_preallocate_falloc, qcow2_get_last_cluster,
                                        preallocate_co)
from gqemu.block.qcow2_header import (
    REFT_OFFSET_MASK, c_hex, L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED, size_to_l1,
    QCOW2_AUTOCLEAR_DATA_FILE_RAW)
from gqemu.block.qcow2_refcount_ro import get_refcount_ro, set_refcount_ro
from gqemu.block.qcow2_l2 import (QCOW2_CLUSTER_NORMAL, get_l2_entry, qcow2_get_cluster_type,
                                  set_l2_bitmap, set_l2_entry)
from gqemu.block.qcow2_refcount import (
    qcow2_free_any_cluster, qcow2_free_clusters, qcow2_process_discards,
    update_refcount_discard)
from gqemu.block.qcow2_state import QCOW2_DISCARD_ALWAYS, Qcow2BDS

QCOW_HEADER_SIZE_OFFSET = 24


def _err(ret: int, what: str) -> tuple[int, str]:
    return ret, "%s: %s" % (what, os.strerror(-ret))


@coroutine_fn
def qcow2_co_truncate(bs: Qcow2BDS, offset: int, prealloc: str = "off",
                      zero_write: bool = False) -> tuple[int, str]:
    """Resize the image to ``offset`` bytes.  QEMU: qcow2_co_truncate."""
    s = bs.opaque
    if offset % 512:
        return -errno.EINVAL, "The new size must be a multiple of 512"
    if prealloc not in ("off", "metadata", "falloc", "full"):
        return -errno.ENOTSUP, "Unsupported preallocation mode '%s'" % prealloc
    qemu_co_mutex_lock(s.lock)
    try:
        if s.nb_snapshots and s.qcow_version < 3:
            return -errno.ENOTSUP, "Can't resize a v2 image which has snapshots"
        from gqemu.block.qcow2_bitmap_sync import qcow2_truncate_bitmaps_check
        why = qcow2_truncate_bitmaps_check(bs)
        if why is not None:
            return -errno.ENOTSUP, why
        old_length = bs.total_sectors * 512
        new_l1_size = size_to_l1(s.cluster_bits, s.l2_bits, offset)
        if offset < old_length:
            if prealloc != "off":
                return -errno.ENOTSUP, "Preallocation can't be used for shrinking an image"
            ret, msg = _shrink(bs, offset, old_length, new_l1_size)
            if ret >= 0 and s.has_data_file:
                ret, msg = _truncate_data_file(bs, offset)
        else:
            ret, msg = 0, ""
            if new_l1_size > s.l1_size:
                ret = qcow2_grow_l1_table(bs, new_l1_size, exact=True)
                if ret < 0:
                    ret, msg = _err(ret, "Failed to grow the L1 table")
            if s.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW and prealloc == "off":
                prealloc = "metadata"       # a raw data file's clusters are all mapped
            if ret >= 0 and (prealloc == "metadata" or prealloc != "off" and s.has_data_file):
                # with a data file, falloc/full map the clusters and the
                # data file is grown with that preallocation
                ret, msg = preallocate_co(bs, old_length, offset, prealloc)
            elif ret >= 0 and prealloc != "off":
                # the file grows with zeroes (file-posix takes the zero-write
                # flag for a regular file): the new subclusters are allocated
                # so that they read those, not the backing file
                ret, msg = qcow2_co_preallocate_falloc(bs, old_length, offset, prealloc,
                                                       zero_write)
                zero_write = False
            elif ret >= 0 and s.has_data_file:
                ret, msg = _truncate_data_file(bs, offset)
            if ret >= 0 and zero_write and offset > old_length:
                ret, msg = _zero_new_area(bs, old_length, offset)
        if ret < 0:
            return ret, msg
        # the node takes the new size before the header says so: a failed
        # header write leaves it with that size
        s.size = offset
        bs.total_sectors = offset // 512
        ret = qcow2_co_pwrite_file(bs, QCOW_HEADER_SIZE_OFFSET, struct.pack(">Q", offset))
        if ret >= 0:
            ret = qcow2_co_flush_file(bs)
        if ret < 0:
            return _err(ret, "Failed to update the image size")
        s.l1_vm_state_index = new_l1_size
        # cache sizes for the new size: both caches are written back and
        # replaced by empty ones
        try:
            qcow2_update_options(bs, dict(s.open_options), s.flags)
        except BlockError as e:
            return -e.errno, str(e)
        return 0, ""
    finally:
        qemu_co_mutex_unlock(s.lock)


@coroutine_fn
def _truncate_data_file(bs: Qcow2BDS, offset: int) -> tuple[int, str]:
    """Without preallocation the external data file follows the image's
    new size, in both directions.  QEMU: qcow2_co_truncate,
    PREALLOC_MODE_OFF with has_data_file."""
    from gqemu.block.io_truncate import bdrv_co_truncate
    from gqemu.block.qcow2_data_file import qcow2_data_child
    return bdrv_co_truncate(qcow2_data_child(bs).bs, offset, True, "off")


@coroutine_fn
def _zero_new_area(bs: Qcow2BDS, old_length: int, offset: int) -> tuple[int, str]:
    """The grown area reads as zero, not as the longer backing file: whole
    subclusters get the zero flag (v3 only: a v2 image with a backing file
    fails with -ENOTSUP), the rest of the subcluster at the old end is
    written with zeroes (it may still hold data from before a shrink).
    Context: coroutine, s->lock held (dropped around the write).
    QEMU: qcow2_co_truncate's BDRV_REQ_ZERO_WRITE part."""
    s = bs.opaque
    zero_start = (old_length + s.subcluster_size - 1) & ~(s.subcluster_size - 1)
    if offset > zero_start:
        ret = qcow2_subcluster_zeroize(bs, zero_start, offset - zero_start, 0)
        if ret < 0:
            return _err(ret, "Failed to zero out new clusters")
    if zero_start > old_length:
        n = min(zero_start, offset) - old_length
        qemu_co_mutex_unlock(s.lock)
        ret = bs.drv.bdrv_co_pwritev(bs, old_length, n,  # type: ignore[union-attr]
                                     QEMUIOVector([bytearray(n)]), 0)
        qemu_co_mutex_lock(s.lock)
        if ret < 0:
            return _err(ret, "Failed to zero out the new area")
    return 0, ""


@coroutine_fn
def _shrink(bs: Qcow2BDS, offset: int, old_length: int, new_l1_size: int) -> tuple[int, str]:
    s = bs.opaque
    cs, cb = s.cluster_size, s.cluster_bits
    start = (offset + cs - 1) & ~(cs - 1)
    # per cluster, as a discard (an L2 table is allocated where none is);
    # the caches are not written back here
    ret = qcow2_cluster_discard(bs, start, old_length - start, QCOW2_DISCARD_ALWAYS, True)
    if ret < 0:
        return _err(ret, "Failed to discard cropped clusters")
    ret = _shrink_l1_table(bs, new_l1_size)
    if ret < 0:
        return _err(ret, "Failed to reduce the number of L2 tables")
    ret = qcow2_shrink_reftable(bs)
    if ret < 0:
        return _err(ret, "Failed to discard unused refblocks")
    old_file_size = qcow2_file_length(bs)
    if old_file_size < 0:
        return _err(old_file_size, "Failed to inquire current file length")
    last = qcow2_get_last_cluster(bs, old_file_size)
    if last < -1:
        return _err(last, "Failed to find the last cluster")
    if last >= 0 and (last + 1) << cb < old_file_size:
        # through the file's own node (a blkdebug filter passes it on)
        from gqemu.block.io_truncate import bdrv_co_truncate
        ret, msg = bdrv_co_truncate(bs.file.bs, (last + 1) << cb, False, "off")
        if ret < 0:
            warn_report("Failed to truncate the tail of the image: " + msg)
    return 0, ""


@coroutine_fn
def _discard_tail(bs: Qcow2BDS, start: int, end: int) -> int:
    """Unmap every cluster in [start, end) (a full discard: entries become
    0 whatever the backing file holds).  QEMU: qcow2_cluster_discard with
    full_discard=true.  Like QEMU's, it allocates the L2 table of a range
    that has none (those past the new L1 size are freed again right after,
    but they have grown the file, which the shrink then cuts at its last
    cluster in use)."""
    s = bs.opaque
    cb, l2_bits = s.cluster_bits, s.l2_bits
    while start < end:
        l1_index = start >> (cb + l2_bits)
        l2_index = (start >> cb) & (s.l2_slice_size - 1)      # within the cache slice
        n = min(s.l2_slice_size - l2_index, (end - start + (1 << cb) - 1) >> cb)
        l1e = s.l1_table[l1_index] if l1_index < s.l1_size else 0
        l2_offset = l1e & L1E_OFFSET_MASK
        if l2_offset and l1e & QCOW_OFLAG_COPIED:
            first = ((start >> cb) & ((1 << l2_bits) - 1)) - l2_index
            ret, e = qcow2_cache_get(bs, s.l2_table_cache,
                                     l2_offset + first * s.l2_entry_size)
        else:               # none, or shared with a snapshot: a new one
            ret, e, _ = get_cluster_table(bs, start)
        if ret < 0:
            return ret
        old = []
        for i in range(l2_index, l2_index + n):
            prev = get_l2_entry(s, e.data, i)
            if prev == 0 and not s.extended_l2:
                continue
            qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
            set_l2_entry(s, e.data, i, 0)
            if s.extended_l2:
                set_l2_bitmap(s, e.data, i, 0)
            if prev & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED) or s.has_data_file and \
                    qcow2_get_cluster_type(s.extended_l2, prev, True) == QCOW2_CLUSTER_NORMAL:
                old.append(prev)        # (a data file's cluster 0 is discarded there)
        qcow2_cache_put(s.l2_table_cache, e)
        # host-contiguous clusters are freed (and discarded) as one run,
        # as QEMU's queued discards are merged
        runs: list[list[int]] = []
        for prev in old:
            host = prev & L2E_OFFSET_MASK
            if runs and not prev & QCOW_OFLAG_COMPRESSED and \
                    not runs[-1][0] & QCOW_OFLAG_COMPRESSED and \
                    (runs[-1][0] & L2E_OFFSET_MASK) + (runs[-1][1] << cb) == host:
                runs[-1][1] += 1
            else:
                runs.append([prev, 1])
        for prev, count in runs:
            qcow2_free_any_cluster(bs, prev, count, QCOW2_DISCARD_ALWAYS)
        start += n << cb
    return 0


@coroutine_fn
def qcow2_shrink_reftable(bs: Qcow2BDS) -> int:
    """Drop the refcount blocks that count nothing but (perhaps) their own
    cluster: their reftable entries become 0 (written at once), their
    clusters are freed and discarded in the file.
    Context: coroutine, s->lock held.  Returns: 0 or -errno.
    QEMU: qcow2_shrink_reftable, qcow2_discard_refcount_block."""
    s = bs.opaque
    rbb, cb = s.refcount_block_bits, s.cluster_bits
    keep = []
    for i in range(s.refcount_table_size):
        rb = s.refcount_table[i] & REFT_OFFSET_MASK
        if not rb:
            keep.append(0)
            continue
        ret, e = qcow2_cache_get(bs, s.refcount_block_cache, rb)
        if ret < 0:
            return ret
        data = bytearray(e.data)
        qcow2_cache_put(s.refcount_block_cache, e)
        if (rb >> cb) >> rbb == i:          # it counts its own cluster
            set_refcount_ro(data, s.refcount_order, (rb >> cb) & (s.refcount_block_size - 1), 0)
        keep.append(s.refcount_table[i] if any(data) else 0)
    ret = qcow2_co_pwrite_file(bs, s.refcount_table_offset,
                               struct.pack(">%dQ" % len(keep), *keep))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    for i, entry in enumerate(keep):
        rb = s.refcount_table[i] & REFT_OFFSET_MASK
        if rb and not entry:
            if ret >= 0:
                ret = _discard_refcount_block(bs, rb)
            s.refcount_table[i] = 0
    if not s.cache_discards:
        qcow2_process_discards(bs, ret)
    return ret


@coroutine_fn
def _discard_refcount_block(bs: Qcow2BDS, rb: int) -> int:
    """The refcount of an unused refblock's own cluster goes from 1 to 0
    (in whichever block counts it), the cluster leaves the cache and is
    discarded in the file.  QEMU: qcow2_discard_refcount_block."""
    s = bs.opaque
    ci = rb >> s.cluster_bits
    ti = ci >> s.refcount_block_bits
    cover = s.refcount_table[ti] & REFT_OFFSET_MASK if ti < s.refcount_table_size else 0
    if not cover:
        qcow2_signal_corruption(bs, True, -1, -1, "Refblock at %s is not covered by the "
                                "refcount structures" % c_hex(rb))
        return -errno.EIO
    ret, e = qcow2_cache_get(bs, s.refcount_block_cache, cover)
    if ret < 0:
        return ret
    bi = ci & (s.refcount_block_size - 1)
    rc = get_refcount_ro(e.data, s.refcount_order, bi)
    if rc != 1:
        qcow2_cache_put(s.refcount_block_cache, e)
        qcow2_signal_corruption(bs, True, -1, -1, "Invalid refcount: refblock offset %s, "
                                "reftable index %s, block offset %s, refcount %s" % (
                                    c_hex(cover), c_hex(ci >> s.refcount_block_bits),
                                    c_hex(rb), c_hex(rc)))
        return -errno.EINVAL
    set_refcount_ro(e.data, s.refcount_order, bi, 0)
    qcow2_cache_entry_mark_dirty(s.refcount_block_cache, e)
    qcow2_cache_put(s.refcount_block_cache, e)
    s.free_cluster_index = min(s.free_cluster_index, ci)
    qcow2_cache_discard(s.refcount_block_cache, rb)
    update_refcount_discard(s, rb, s.cluster_size)
    return 0


@coroutine_fn
def _shrink_l1_table(bs: Qcow2BDS, new_l1_size: int) -> int:
    """Zero the L1 entries past ``new_l1_size`` and free their L2 tables
    (the table keeps its size).  QEMU: qcow2_shrink_l1_table."""
    s = bs.opaque
    if new_l1_size >= s.l1_size:
        return 0
    n = s.l1_size - new_l1_size
    BLKDBG_EVENT(bs.file, BLKDBG_L1_SHRINK_WRITE_TABLE)
    ret = bdrv_co_pwrite_zeroes(bs.file, s.l1_table_offset + 8 * new_l1_size, 8 * n, 0)
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        # the entries on disk may be half written: drop them in memory too
        s.l1_table[new_l1_size:s.l1_size] = [0] * n
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS)
    for i in range(s.l1_size - 1, new_l1_size - 1, -1):
        l2_offset = s.l1_table[i] & L1E_OFFSET_MASK
        if not l2_offset:
            continue
        # (a table whose refcount drops to 0 leaves the L2 cache there)
        qcow2_free_clusters(bs, l2_offset, s.cluster_size, QCOW2_DISCARD_ALWAYS)
        s.l1_table[i] = 0
    return 0


@coroutine_fn
def qcow2_co_make_empty(bs: Qcow2BDS) -> int:
    """Unmap every cluster (entries become 0) and write the caches back.
    QEMU: qcow2_make_empty (the discard path)."""
    s = bs.opaque
    qemu_co_mutex_lock(s.lock)
    try:
        ret = _discard_tail(bs, 0, bs.total_sectors * 512)
        if ret >= 0:
            ret = qcow2_cache_flush(bs, s.l2_table_cache)
        if ret >= 0:
            ret = qcow2_cache_flush(bs, s.refcount_block_cache)
        return ret
    finally:
        qemu_co_mutex_unlock(s.lock)
