"""qcow2 reference counts: allocation, freeing.

Entries: qcow2_refcount_ro.py; reading a refcount (``qcow2_get_refcount``,
the table at open): qcow2_refcount_get.py; the discard queue:
qcow2_discard.py (both below this module, re-exported).  Allocation scans
from ``free_cluster_index`` and raises the refcount in the refcount-block
cache before the caller links anything to the new cluster; freeing makes
the refcount cache depend on the L2 cache, so an L2 table that drops a
reference reaches the disk first (reference 4.5).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c.
"""
from __future__ import annotations

from errno import EAGAIN, EFBIG, EINVAL, EIO
import os
import struct
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.io_misc import bdrv_co_pdiscard
from gqemu.block.blkdebug_events import (
    BLKDBG_CLUSTER_ALLOC, BLKDBG_CLUSTER_FREE,
    BLKDBG_REFBLOCK_ALLOC, BLKDBG_REFBLOCK_ALLOC_HOOKUP, BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE,
    BLKDBG_REFBLOCK_ALLOC_WRITE, BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE, BLKDBG_REFTABLE_GROW)
from gqemu.block.qcow2_cache import (
    qcow2_cache_discard, qcow2_cache_discard_cluster, qcow2_cache_entry_mark_dirty,
    qcow2_cache_flush, qcow2_cache_get, qcow2_cache_get_empty, qcow2_cache_put, qcow2_cache_set_dependency)
from gqemu.block.qcow2_header import (
    QCOW_MAX_CLUSTER_OFFSET, QCOW_MAX_REFTABLE_SIZE, REFT_OFFSET_MASK, L2E_OFFSET_MASK,
    QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_ZERO, c_hex)
from gqemu.block.qcow2_discard import (  # noqa: F401 (re-exported)
    qcow2_discard_unused, qcow2_process_discards, update_refcount_discard)
from gqemu.block.qcow2_refcount_get import (  # noqa: F401 (re-exported)
    _refcount_run, load_refcount_block, qcow2_get_refcount, qcow2_refcount_init)
from gqemu.block.qcow2_refcount_ro import (get_refcount_ro, qcow2_refcount_metadata_size,
                                           set_refcount_ro)
from gqemu.block.qcow2_overlap import (
    error_report, qcow2_co_flush_file, qcow2_co_pwrite_file, qcow2_signal_corruption)
from gqemu.block.qcow2_state import (
    QCOW2_DISCARD_NEVER, QCOW2_DISCARD_OTHER, Qcow2BDS, Qcow2State)

__all__ = [
    # reading (qcow2_refcount_get.py) and discards (qcow2_discard.py), re-exported
    "qcow2_refcount_init", "qcow2_get_refcount", "load_refcount_block",
    "qcow2_discard_unused", "update_refcount_discard", "qcow2_process_discards",
    # this module
    "alloc_refcount_block", "qcow2_refcount_area", "qcow2_co_pwrite_sync", "update_refcount",
    "alloc_clusters_noref", "qcow2_alloc_clusters", "qcow2_alloc_clusters_at",
    "qcow2_free_clusters", "qcow2_free_any_cluster", "qcow2_parse_compressed_l2_entry",
]


@coroutine_fn
def alloc_refcount_block(bs: Qcow2BDS, cluster_index: int) -> tuple[int, Any]:
    """The refcount block covering ``cluster_index``, allocating it (and
    growing the refcount table) if needed; after an allocation returns
    -EAGAIN so that the caller searches for free clusters again.  The entry
    returned (also with an error) holds a cache reference.

    Context: coroutine, s->lock held.  QEMU: alloc_refcount_block.
    """
    s = bs.opaque
    cs = s.cluster_size
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC)
    ri = cluster_index >> s.refcount_block_bits
    if ri < s.refcount_table_size:
        rb = s.refcount_table[ri] & REFT_OFFSET_MASK
        if rb:
            if rb & (cs - 1):
                qcow2_signal_corruption(bs, True, -1, -1, "Refblock offset %s "
                                        "unaligned (reftable index: %s)"
                                        % (c_hex(rb), c_hex(ri)))
                return -EIO, None
            return load_refcount_block(bs, rb)
    # the refcount table is written below: L2 tables may have to go first
    ret = qcow2_cache_flush(bs, s.l2_table_cache)
    if ret < 0:
        return ret, None
    new_block = alloc_clusters_noref(bs, cs, QCOW_MAX_CLUSTER_OFFSET)
    if new_block < 0:
        return new_block, None
    if new_block == 0:
        qcow2_signal_corruption(bs, True, -1, -1, "Preventing invalid "
                                "allocation of refcount block at offset 0")
        return -EIO, None
    new_index = new_block >> s.cluster_bits
    s.highest_alloc = max(s.highest_alloc, new_block + cs)
    if new_index >> s.refcount_block_bits == ri:
        ret, e = qcow2_cache_get_empty(bs, s.refcount_block_cache, new_block)
        if ret < 0:
            return ret, None
        e.data[:] = bytes(cs)
        set_refcount_ro(e.data, s.refcount_order,
                        new_index & (s.refcount_block_size - 1), 1)
    else:
        ret = update_refcount(bs, new_block, cs, 1, False)
        if ret < 0:
            return ret, None
        ret = qcow2_cache_flush(bs, s.refcount_block_cache)
        if ret < 0:
            return ret, None
        ret, e = qcow2_cache_get_empty(bs, s.refcount_block_cache, new_block)
        if ret < 0:
            return ret, None
        e.data[:] = bytes(cs)
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_WRITE)
    qcow2_cache_entry_mark_dirty(s.refcount_block_cache, e)
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        return ret, e
    if ri < s.refcount_table_size:
        BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_HOOKUP)
        ret = qcow2_co_pwrite_sync(bs, s.refcount_table_offset + ri * 8,
                                   struct.pack(">Q", new_block))
        if ret < 0:
            return ret, e
        s.refcount_table[ri] = new_block
        return -EAGAIN, e
    qcow2_cache_put(s.refcount_block_cache, e)
    # the table is full: new refcount blocks and a new table go after
    # everything used so far, describing themselves
    BLKDBG_EVENT(bs.file, BLKDBG_REFTABLE_GROW)
    rbs = s.refcount_block_size
    blocks_used = -(-max(cluster_index + 1, new_index + 1) // rbs)
    ret = qcow2_refcount_area(bs, blocks_used * rbs * cs, 0, False, ri, new_block)
    if ret < 0:
        return ret, None
    ret, e = load_refcount_block(bs, new_block)
    if ret < 0:
        return ret, None
    return -EAGAIN, e


@coroutine_fn
def qcow2_refcount_area(bs: Qcow2BDS, start_offset: int, additional_clusters: int,
                        exact_size: bool, new_refblock_index: int,
                        new_refblock_offset: int) -> int:
    """Create self-describing refcount blocks and a new refcount table from
    ``start_offset`` (only free space after it), covering themselves and
    ``additional_clusters`` more; write the blocks, the table, switch the
    header, free the old table.

    Context: coroutine, s->lock held.  Returns: the offset after the new
    structures, or -errno.  QEMU: qcow2_refcount_area.
    """
    s = bs.opaque
    cs = s.cluster_size
    rbs = s.refcount_block_size
    _, total = qcow2_refcount_metadata_size(start_offset // cs + additional_clusters, cs,
                                            s.refcount_order, not exact_size)
    if total > QCOW_MAX_REFTABLE_SIZE:
        return -EFBIG
    area_index = start_offset // cs // rbs
    table_size = total if exact_size else total + -(-total // 2)
    per_cluster = cs // 8
    table_size = -(-table_size // per_cluster) * per_cluster
    table_clusters = table_size * 8 // cs
    if table_size > QCOW_MAX_REFTABLE_SIZE:
        return -EFBIG
    table = (list(s.refcount_table) + [0] * table_size)[:table_size]
    if new_refblock_offset:
        table[new_refblock_index] = new_refblock_offset
    additional = sum(1 for i in range(area_index, total) if not table[i])
    table_offset = start_offset + additional * cs
    end_offset = table_offset + table_clusters * cs
    s.highest_alloc = max(s.highest_alloc, end_offset)
    block_offset = start_offset
    for i in range(area_index, total):
        if table[i]:
            ret, e = qcow2_cache_get(bs, s.refcount_block_cache, table[i])
            if ret < 0:
                return ret
        else:
            ret, e = qcow2_cache_get_empty(bs, s.refcount_block_cache, block_offset)
            if ret < 0:
                return ret
            e.data[:] = bytes(cs)
            qcow2_cache_entry_mark_dirty(s.refcount_block_cache, e)
            table[i] = block_offset
            block_offset += cs
        first = i * rbs * cs
        if first < end_offset:
            j = (start_offset - first) // cs if first < start_offset else 0
            for k in range(j, min((end_offset - first) // cs, rbs)):
                set_refcount_ro(e.data, s.refcount_order, k, 1)
            qcow2_cache_entry_mark_dirty(s.refcount_block_cache, e)
        qcow2_cache_put(s.refcount_block_cache, e)
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS)
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE)
    ret = qcow2_co_pwrite_sync(bs, table_offset, struct.pack(">%dQ" % table_size, *table))
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE)
    ret = qcow2_co_pwrite_sync(bs, 48, struct.pack(">QI", table_offset, table_clusters))
    if ret < 0:
        return ret
    old_off, old_size = s.refcount_table_offset, s.refcount_table_size
    s.refcount_table = table
    s.refcount_table_offset = table_offset
    s.refcount_table_size = table_size
    qcow2_free_clusters(bs, old_off, old_size * 8, QCOW2_DISCARD_OTHER)
    return end_offset


@coroutine_fn
def qcow2_co_pwrite_sync(bs: Qcow2BDS, offset: int, data: bytes) -> int:
    """Write and flush.  QEMU: bdrv_pwrite_sync(bs->file, ...)."""
    ret = qcow2_co_pwrite_file(bs, offset, data)
    if ret < 0:
        return ret
    return qcow2_co_flush_file(bs)


@coroutine_fn
def update_refcount(bs: Qcow2BDS, offset: int, length: int, addend: int,
                    decrease: bool) -> int:
    """Add (or subtract) ``addend`` to every cluster of a byte range; on
    failure the clusters already changed are rolled back.

    Context: coroutine, s->lock held.  Returns: 0 or -errno (-EAGAIN: a
    refcount block was allocated, search again).  QEMU: update_refcount.
    """
    s = bs.opaque
    if length < 0:
        return -EINVAL
    if length == 0:
        return 0
    cb = s.cluster_bits
    if decrease:
        qcow2_cache_set_dependency(bs, s.refcount_block_cache, s.l2_table_cache)
    first = offset >> cb
    last = (offset + length - 1) >> cb
    e: Any = None
    old_ri = -1
    ret = 0
    ci = first
    while ci <= last:
        ri = ci >> s.refcount_block_bits
        if ri != old_ri:
            if e is not None:
                qcow2_cache_put(s.refcount_block_cache, e)
                e = None
            ret, e = alloc_refcount_block(bs, ci)
            if ret == -EAGAIN and s.free_cluster_index > first:
                s.free_cluster_index = first
            if ret < 0:
                break
        old_ri = ri
        qcow2_cache_entry_mark_dirty(s.refcount_block_cache, e)
        bi = ci & (s.refcount_block_size - 1)
        rc = get_refcount_ro(e.data, s.refcount_order, bi)
        new = rc - addend if decrease else rc + addend
        if new < 0 or new > s.refcount_max:
            ret = -EINVAL
            break
        set_refcount_ro(e.data, s.refcount_order, bi, new)
        if not decrease and (ci + 1) << cb > s.highest_alloc:
            s.highest_alloc = (ci + 1) << cb
        if new == 0:
            if ci < s.free_cluster_index:
                s.free_cluster_index = ci
            if (ci << cb) in s.refcount_block_cache.by_offset:
                qcow2_cache_put(s.refcount_block_cache, e)
                e, old_ri = None, -1
                qcow2_cache_discard(s.refcount_block_cache, ci << cb)
            qcow2_cache_discard_cluster(s.l2_table_cache, ci << cb, 1 << cb)
        ci += 1
    if e is not None:
        qcow2_cache_put(s.refcount_block_cache, e)
    if ret < 0:
        # undo what was done (QEMU passes the byte range up to the cluster
        # that failed)
        update_refcount(bs, offset, (ci << cb) - offset, addend, not decrease)
    return ret


@coroutine_fn
def alloc_clusters_noref(bs: Qcow2BDS, size: int, max_offset: int) -> int:
    """Find ``size`` bytes of free clusters without taking them.
    Returns: the offset or -errno.  QEMU: alloc_clusters_noref."""
    s = bs.opaque
    nb = (size + s.cluster_size - 1) >> s.cluster_bits
    i = 0
    while i < nb:
        # as QEMU's qcow2_get_refcount per cluster, one refcount block's
        # run of used (or free) clusters at a time
        ret, free, n = _refcount_run(bs, s.free_cluster_index, nb - i)
        if ret < 0:
            return ret
        s.free_cluster_index += n
        i = i + n if free else 0
    if s.free_cluster_index > 0 and s.free_cluster_index - 1 > max_offset >> s.cluster_bits:
        return -EFBIG
    return (s.free_cluster_index - nb) << s.cluster_bits


@coroutine_fn
def qcow2_alloc_clusters(bs: Qcow2BDS, size: int) -> int:
    """Allocate contiguous clusters for ``size`` bytes; refcount 1 each.
    Context: coroutine, s->lock held.  Returns: offset or -errno.
    QEMU: qcow2_alloc_clusters."""
    BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_ALLOC)
    while True:
        offset = alloc_clusters_noref(bs, size, QCOW_MAX_CLUSTER_OFFSET)
        if offset < 0:
            return offset
        ret = update_refcount(bs, offset, size, 1, False)
        if ret != -EAGAIN:
            break
    return ret if ret < 0 else offset


@coroutine_fn
def qcow2_alloc_clusters_at(bs: Qcow2BDS, offset: int, nb_clusters: int) -> int:
    """Take up to ``nb_clusters`` free clusters starting exactly at
    ``offset`` (no event: this extends an allocation).  Returns how many,
    or -errno.  QEMU: qcow2_alloc_clusters_at."""
    s = bs.opaque
    if nb_clusters == 0:
        return 0
    while True:
        ci = offset >> s.cluster_bits
        i = 0
        while i < nb_clusters:
            ret, rc = qcow2_get_refcount(bs, ci + i)
            if ret < 0:
                return ret
            if rc:
                break
            i += 1
        ret = update_refcount(bs, offset, i << s.cluster_bits, 1, False)
        if ret != -EAGAIN:
            break
    return ret if ret < 0 else i


@coroutine_fn
def qcow2_free_clusters(bs: Qcow2BDS, offset: int, size: int,
                        discard: int = QCOW2_DISCARD_NEVER) -> None:
    """Drop one reference from each cluster of the range; a failure only
    leaks.  ``discard`` says why (QCOW2_DISCARD_*; True is ALWAYS): when
    the image passes that type through (``s.discard_passthrough``, the
    pass-discard-* options) the clusters left unused are discarded in the
    file.  QEMU: qcow2_free_clusters, update_refcount_discard,
    qcow2_process_discards."""
    BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_FREE)
    ret = update_refcount(bs, offset, size, 1, True)
    if ret < 0:
        error_report("qcow2_free_clusters failed: %s" % os.strerror(-ret))
        return
    qcow2_discard_unused(bs, offset, size, discard)




@coroutine_fn
def qcow2_free_any_cluster(bs: Qcow2BDS, l2_entry: int, nb_clusters: int = 1,
                           discard: int = QCOW2_DISCARD_NEVER) -> None:
    """Free whatever an L2 entry points at; ``discard`` as for
    qcow2_free_clusters; with an external data file nothing is counted,
    the data cluster is only discarded there.  QEMU: qcow2_free_any_cluster."""
    s = bs.opaque
    if s.has_data_file:
        from gqemu.block.qcow2_l2 import (QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC,
                                          qcow2_get_cluster_type)
        t = qcow2_get_cluster_type(s.extended_l2, l2_entry, True)
        if s.discard_passthrough[int(discard)] and s.data_file is not None \
                and t in (QCOW2_CLUSTER_NORMAL, QCOW2_CLUSTER_ZERO_ALLOC):
            bdrv_co_pdiscard(s.data_file.bs, l2_entry & L2E_OFFSET_MASK,
                             nb_clusters << s.cluster_bits)
        return
    if l2_entry & QCOW_OFLAG_COMPRESSED:
        coffset, csize = qcow2_parse_compressed_l2_entry(s, l2_entry)
        qcow2_free_clusters(bs, coffset, csize, discard)
        return
    host = l2_entry & L2E_OFFSET_MASK
    if not host:
        return
    if host & (s.cluster_size - 1):
        qcow2_signal_corruption(bs, False, -1, -1, "Cannot free unaligned "
                                "cluster %s" % c_hex(host))
        return
    if l2_entry & QCOW_OFLAG_ZERO and not s.extended_l2 and not host:
        return
    qcow2_free_clusters(bs, host, nb_clusters << s.cluster_bits, discard)


def qcow2_parse_compressed_l2_entry(s: Qcow2State, l2_entry: int) -> tuple[int, int]:
    """(host byte offset, bytes to read) of a compressed descriptor.
    QEMU: qcow2_parse_compressed_l2_entry."""
    coffset = l2_entry & s.cluster_offset_mask
    nb_csectors = ((l2_entry >> s.csize_shift) & s.csize_mask) + 1
    return coffset, nb_csectors * 512 - (coffset & 511)

