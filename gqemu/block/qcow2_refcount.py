"""qcow2 reference counts: lookup, allocation, freeing.

Refcount widths 1..64 bits (``refcount_order`` 0-6); sub-byte entries are
LSB-first.  Allocation scans from ``free_cluster_index`` and raises the
refcount in the refcount-block cache before the caller links anything to the
new cluster; freeing makes the refcount cache depend on the L2 cache, so an
L2 table that drops a reference reaches the disk first (reference 4.5).

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
from gqemu.block.blkdebug_events import (
    BLKDBG_CLUSTER_ALLOC, BLKDBG_CLUSTER_ALLOC_BYTES, BLKDBG_CLUSTER_FREE,
    BLKDBG_REFBLOCK_ALLOC, BLKDBG_REFBLOCK_ALLOC_HOOKUP, BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE,
    BLKDBG_REFBLOCK_ALLOC_WRITE, BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE, BLKDBG_REFTABLE_LOAD)
from gqemu.block.qcow2_cache import (
    qcow2_cache_discard, qcow2_cache_entry_mark_dirty,
    qcow2_cache_flush, qcow2_cache_get, qcow2_cache_get_empty, qcow2_cache_put,
    qcow2_cache_set_dependency, qcow2_co_flush_file, qcow2_co_pread_file,
    qcow2_co_pwrite_file)
from gqemu.block.qcow2_header import (
    QCOW_MAX_REFTABLE_SIZE, REFT_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COMPRESSED,
    QCOW_OFLAG_ZERO, c_hex)
from gqemu.block.qcow2_overlap import (
    QCOW2_OL_REFCOUNT_TABLE, error_report, qcow2_pre_write_overlap_check,
    qcow2_signal_corruption)


def get_refcount_ro(block: bytearray, order: int, index: int) -> int:
    """Entry ``index`` of a refcount block of width ``1 << order`` bits.
    QEMU: get_refcount_ro0 .. get_refcount_ro6."""
    if order < 3:
        bits = 1 << order
        per_byte = 8 >> order
        byte = block[index // per_byte]
        return (byte >> ((index % per_byte) * bits)) & ((1 << bits) - 1)
    w = 1 << (order - 3)
    return int.from_bytes(block[index * w:index * w + w], "big")


def set_refcount_ro(block: bytearray, order: int, index: int, value: int) -> None:
    """Store ``value`` (already range-checked).  QEMU: set_refcount_ro0..6."""
    if order < 3:
        bits = 1 << order
        per_byte = 8 >> order
        shift = (index % per_byte) * bits
        mask = ((1 << bits) - 1) << shift
        i = index // per_byte
        block[i] = (block[i] & ~mask) | ((value << shift) & mask)
        return
    w = 1 << (order - 3)
    block[index * w:index * w + w] = value.to_bytes(w, "big")


@coroutine_fn
def qcow2_refcount_init(bs: Any) -> int:
    """Read the refcount table into memory.  QEMU: qcow2_refcount_init."""
    s = bs.opaque
    n = s.refcount_table_size
    if n:
        BLKDBG_EVENT(bs.file, BLKDBG_REFTABLE_LOAD)
        ret, buf = qcow2_co_pread_file(bs, s.refcount_table_offset, n * 8)
        if ret < 0:
            return ret
        s.refcount_table = list(struct.unpack(">%dQ" % n, buf))
    else:
        s.refcount_table = []
    return 0


@coroutine_fn
def qcow2_get_refcount(bs: Any, cluster_index: int) -> tuple[int, int]:
    """(0, refcount) or (-errno, 0).  QEMU: qcow2_get_refcount."""
    s = bs.opaque
    ri = cluster_index >> s.refcount_block_bits
    if ri >= s.refcount_table_size:
        return 0, 0
    rb = s.refcount_table[ri] & REFT_OFFSET_MASK
    if not rb:
        return 0, 0
    if rb & (s.cluster_size - 1):
        qcow2_signal_corruption(bs, True, -1, -1, "Refblock offset %s unaligned "
                                "(reftable index: %s)" % (c_hex(rb), c_hex(ri)))
        return -EIO, 0
    ret, e = qcow2_cache_get(bs, s.refcount_block_cache, rb)
    if ret < 0:
        return ret, 0
    v = get_refcount_ro(e.data, s.refcount_order,
                        cluster_index & (s.refcount_block_size - 1))
    qcow2_cache_put(s.refcount_block_cache, e)
    return 0, v


@coroutine_fn
def alloc_refcount_block(bs: Any, cluster_index: int) -> tuple[int, Any]:
    """The refcount block covering ``cluster_index``, allocating it (and
    growing the refcount table) if needed; after an allocation returns
    -EAGAIN so that the caller searches for free clusters again.

    Context: coroutine, s->lock held.  QEMU: alloc_refcount_block.
    """
    s = bs.opaque
    cs = s.cluster_size
    ri = cluster_index >> s.refcount_block_bits
    if ri < s.refcount_table_size:
        rb = s.refcount_table[ri] & REFT_OFFSET_MASK
        if rb:
            if rb & (cs - 1):
                qcow2_signal_corruption(bs, True, -1, -1, "Refblock offset %s "
                                        "unaligned (reftable index: %s)"
                                        % (c_hex(rb), c_hex(ri)))
                return -EIO, None
            return qcow2_cache_get(bs, s.refcount_block_cache, rb)
    else:
        return qcow2_refcount_area(bs, ri), None
    # a new refcount block in a range the table already has room for
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC)
    new_block = alloc_clusters_noref(bs, cs)
    if new_block < 0:
        return new_block, None
    if new_block == 0:
        qcow2_signal_corruption(bs, True, new_block, cs, "Preventing invalid "
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
    qcow2_cache_put(s.refcount_block_cache, e)
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        return ret, None
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_HOOKUP)
    ret = qcow2_pre_write_overlap_check(bs, QCOW2_OL_REFCOUNT_TABLE,
                                        s.refcount_table_offset + ri * 8, 8)
    if ret < 0:
        return ret, None
    ret = qcow2_co_pwrite_file(bs, s.refcount_table_offset + ri * 8,
                               struct.pack(">Q", new_block))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret, None
    s.refcount_table[ri] = new_block
    s.free_cluster_index = min(s.free_cluster_index, new_index)
    return -EAGAIN, None


@coroutine_fn
def qcow2_refcount_area(bs: Any, need_ri: int) -> int:
    """Grow the refcount table: place new refcount blocks and a new table
    right after the covered range, where they describe themselves; write
    them, flush, switch the header, then free the old table.

    Context: coroutine, s->lock held.  Returns: -EAGAIN, or -errno.
    QEMU: qcow2_refcount_area (reached from alloc_refcount_block).
    """
    s = bs.opaque
    cs = s.cluster_size
    rbs = s.refcount_block_size
    old_size = s.refcount_table_size
    area_start = old_size << s.refcount_block_bits          # first uncovered
    new_size = max(need_ri + 1, old_size * 3 // 2 + 1)
    while True:
        table_clusters = (new_size * 8 + cs - 1) // cs
        new_size = table_clusters * cs // 8
        nb_blocks = 1
        while nb_blocks * rbs < nb_blocks + table_clusters:
            nb_blocks += 1
        if old_size + nb_blocks <= new_size:
            break
        new_size = old_size + nb_blocks
    if table_clusters * cs > QCOW_MAX_REFTABLE_SIZE:
        return -EFBIG
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS)
    used = nb_blocks + table_clusters
    s.highest_alloc = max(s.highest_alloc, (area_start + used) * cs)
    blocks = bytearray(nb_blocks * cs)
    for i in range(used):
        b, idx = divmod(i, rbs)
        view = memoryview(blocks)[b * cs:(b + 1) * cs]
        set_refcount_ro(view, s.refcount_order, idx, 1)   # type: ignore[arg-type]
    ret = qcow2_co_pwrite_file(bs, area_start * cs, blocks)
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE)
    table = list(s.refcount_table) + [0] * (new_size - old_size)
    for b in range(nb_blocks):
        table[old_size + b] = (area_start + b) * cs
    table_off = (area_start + nb_blocks) * cs
    ret = qcow2_co_pwrite_file(bs, table_off, struct.pack(">%dQ" % new_size, *table))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE)
    ret = qcow2_co_pwrite_file(bs, 48, struct.pack(">QI", table_off, table_clusters))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    old_off, old_clusters = s.refcount_table_offset, (old_size * 8 + cs - 1) // cs
    s.refcount_table = table
    s.refcount_table_offset = table_off
    s.refcount_table_size = new_size
    qcow2_free_clusters(bs, old_off, old_clusters * cs)
    s.free_cluster_index = 0
    return -EAGAIN


@coroutine_fn
def update_refcount(bs: Any, offset: int, length: int, addend: int,
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
        ret = qcow2_cache_set_dependency(bs, s.refcount_block_cache,
                                         s.l2_table_cache)
        if ret < 0:
            return ret
    first = offset >> cb
    last = (offset + length - 1) >> cb
    e: Any = None
    old_ri = -1
    ret = 0
    done = first
    for ci in range(first, last + 1):
        ri = ci >> s.refcount_block_bits
        if ri != old_ri:
            if e is not None:
                qcow2_cache_put(s.refcount_block_cache, e)
                e = None
            ret, e = alloc_refcount_block(bs, ci)
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
            qcow2_cache_discard(s.l2_table_cache, ci << cb)
            qcow2_cache_discard(s.refcount_block_cache, ci << cb)
        done = ci + 1
    if e is not None:
        qcow2_cache_put(s.refcount_block_cache, e)
    if ret < 0 and done > first:
        update_refcount(bs, first << cb, (done - first) << cb, addend, not decrease)
    return ret


@coroutine_fn
def alloc_clusters_noref(bs: Any, size: int) -> int:
    """Find ``size`` bytes of free clusters without taking them.
    Returns: the offset or -errno.  QEMU: alloc_clusters_noref."""
    s = bs.opaque
    nb = (size + s.cluster_size - 1) >> s.cluster_bits
    i = 0
    while i < nb:
        idx = s.free_cluster_index
        s.free_cluster_index += 1
        ret, rc = qcow2_get_refcount(bs, idx)
        if ret < 0:
            return ret
        i = 0 if rc else i + 1
    if (s.free_cluster_index << s.cluster_bits) > L2E_OFFSET_MASK:
        return -EFBIG
    return (s.free_cluster_index - nb) << s.cluster_bits


@coroutine_fn
def qcow2_alloc_clusters(bs: Any, size: int) -> int:
    """Allocate contiguous clusters for ``size`` bytes; refcount 1 each.
    Context: coroutine, s->lock held.  Returns: offset or -errno.
    QEMU: qcow2_alloc_clusters."""
    BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_ALLOC)
    while True:
        offset = alloc_clusters_noref(bs, size)
        if offset < 0:
            return offset
        ret = update_refcount(bs, offset, size, 1, False)
        if ret != -EAGAIN:
            break
    return ret if ret < 0 else offset


@coroutine_fn
def qcow2_alloc_bytes(bs: Any, size: int) -> int:
    """Byte-granular allocation for compressed clusters.
    Returns: offset or -errno.  QEMU: qcow2_alloc_bytes."""
    s = bs.opaque
    cs = s.cluster_size
    BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_ALLOC_BYTES)
    offset = s.free_byte_offset
    if offset:
        ret, rc = qcow2_get_refcount(bs, offset >> s.cluster_bits)
        if ret < 0:
            return ret
        if rc == s.refcount_max:
            offset = 0
    free_in_cluster = cs - (offset & (cs - 1))
    while True:
        if not offset or free_in_cluster < size:
            new_cluster = alloc_clusters_noref(bs, cs)
            if new_cluster < 0:
                return new_cluster
            if new_cluster == 0:
                qcow2_signal_corruption(bs, True, -1, -1, "Preventing invalid "
                                        "allocation of compressed cluster at offset 0")
                return -EIO
            if not offset or ((offset + cs - 1) & ~(cs - 1)) != new_cluster:
                offset = new_cluster
                free_in_cluster = cs
            else:
                free_in_cluster += cs
        ret = update_refcount(bs, offset, size, 1, False)
        if ret < 0:
            offset = 0
        if ret != -EAGAIN:
            break
    if ret < 0:
        return ret
    ret = qcow2_cache_set_dependency(bs, s.l2_table_cache, s.refcount_block_cache)
    if ret < 0:
        return ret
    s.free_byte_offset = offset + size
    if not s.free_byte_offset & (cs - 1):
        s.free_byte_offset = 0
    return offset


@coroutine_fn
def qcow2_free_clusters(bs: Any, offset: int, size: int) -> None:
    """Drop one reference from each cluster of the range; a failure only
    leaks.  QEMU: qcow2_free_clusters."""
    BLKDBG_EVENT(bs.file, BLKDBG_CLUSTER_FREE)
    ret = update_refcount(bs, offset, size, 1, True)
    if ret < 0:
        error_report("qcow2_free_clusters failed: %s" % os.strerror(-ret))


@coroutine_fn
def qcow2_free_any_cluster(bs: Any, l2_entry: int, nb_clusters: int = 1) -> None:
    """Free whatever an L2 entry points at.  QEMU: qcow2_free_any_cluster."""
    s = bs.opaque
    if l2_entry & QCOW_OFLAG_COMPRESSED:
        coffset, csize = qcow2_parse_compressed_l2_entry(s, l2_entry)
        qcow2_free_clusters(bs, coffset, csize)
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
    qcow2_free_clusters(bs, host, nb_clusters << s.cluster_bits)


def qcow2_parse_compressed_l2_entry(s: Any, l2_entry: int) -> tuple[int, int]:
    """(host byte offset, bytes to read) of a compressed descriptor.
    QEMU: qcow2_parse_compressed_l2_entry."""
    coffset = l2_entry & s.cluster_offset_mask
    nb_csectors = ((l2_entry >> s.csize_shift) & s.csize_mask) + 1
    return coffset, nb_csectors * 512 - (coffset & 511)

