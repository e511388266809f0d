"""qcow2 guest-to-host mapping: L1/L2 lookup, L1 growth, L2 table
allocation (zeroing and discard: ``qcow2_zero.py``).

Entry decoding (standard, compressed, zero, extended L2 with subclusters) is
pure; lookups go through the L2 cache.  An L2 table is written before the
L1 entry that points at it.  Host space for writes: ``qcow2_alloc.py``.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-cluster.c.
"""
from __future__ import annotations

from errno import EFBIG, EIO
import struct
from typing import Any

from gqemu.coroutine import coroutine_fn, qemu_co_queue_wait
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.blkdebug_events import (
    BLKDBG_L1_GROW_ACTIVATE_TABLE, BLKDBG_L1_GROW_ALLOC_TABLE, BLKDBG_L1_GROW_WRITE_TABLE,
    BLKDBG_L1_UPDATE, BLKDBG_L2_ALLOC_COW_READ, BLKDBG_L2_ALLOC_WRITE)
from gqemu.block.qcow2_cache import (
    qcow2_cache_entry_mark_dirty, qcow2_cache_flush, qcow2_cache_get,
    qcow2_cache_get_empty, qcow2_cache_put)
from gqemu.block.qcow2_header import (
    QCOW_MAX_L1_SIZE, L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_OFLAG_COPIED, c_hex)
from gqemu.block.qcow2_l2 import (
    QCOW2_SUBCLUSTER_COMPRESSED, QCOW2_SUBCLUSTER_INVALID,
    QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, QCOW2_SUBCLUSTER_ZERO_ALLOC,
    QCOW2_SUBCLUSTER_ZERO_PLAIN, _HOST_TYPES, _PLAIN_SC, get_l2_bitmap, get_l2_entry,
    qcow2_get_cluster_type, qcow2_get_subcluster_type)
from gqemu.block.qcow2_overlap import (
    qcow2_co_flush_file, qcow2_co_pwrite_file, qcow2_file_length,
    qcow2_pre_write_overlap_check, qcow2_signal_corruption)
from gqemu.block.qcow2_state import (
    QCOW2_DISCARD_ALWAYS, QCOW2_DISCARD_OTHER, QCOW2_OL_ACTIVE_L1,
    Qcow2BDS)
from gqemu.block.qcow2_refcount import (
    qcow2_alloc_clusters, qcow2_free_clusters)

def offset_to_l2_slice_index(s: Any, offset: int) -> int:
    """Index of ``offset``'s L2 entry within its cache slice.
    QEMU: offset_to_l2_slice_index."""
    return (offset >> s.cluster_bits) & (s.l2_slice_size - 1)


def l2_slice_offset(s: Any, offset: int, l2_offset: int) -> int:
    """File offset of the L2 slice holding ``offset``'s entry (the L2 cache
    holds slices of l2-cache-entry-size bytes; by default the whole table)."""
    first = (offset >> s.cluster_bits) & (s.l2_size - 1) & ~(s.l2_slice_size - 1)
    return l2_offset + first * s.l2_entry_size



def offset_to_l1_index(s: Any, offset: int) -> int:
    """The L1 index of a guest offset as QEMU computes it: an ``int``
    (the shift cut to 32 bits, sign and all) stored in a ``uint64_t``, so
    that a VM state offset near 2^63 lands on a small index or past any
    L1 table.  QEMU: offset_to_l1_index (qcow2.h)."""
    v = (offset >> (s.l2_bits + s.cluster_bits)) & 0xffffffff
    return v if v < 1 << 31 else v + ((1 << 64) - (1 << 32))

@coroutine_fn
def l2_load(bs: Qcow2BDS, offset: int, l2_offset: int, l1_index: int = 0) -> tuple[int, Any]:
    """Load the L2 slice for guest ``offset`` of the table at ``l2_offset``
    through the cache; a slice that starts at or past the end of the file
    is corruption (gqemu is stricter than QEMU here: reliability T23).  A
    slice that only runs past the end reads zero-filled, as in QEMU.
    QEMU: l2_load."""
    s = bs.opaque
    # l2_slice_offset, inlined
    slice_offset = l2_offset + (((offset >> s.cluster_bits) & (s.l2_size - 1)
                                 & ~(s.l2_slice_size - 1)) * s.l2_entry_size)
    if slice_offset not in s.l2_table_cache.by_offset:
        flen = qcow2_file_length(bs)
        if flen >= 0 and slice_offset >= flen:
            qcow2_signal_corruption(bs, True, -1, -1, "L2 table offset %s beyond the end "
                                    "of the image file (L1 index: %s)"
                                    % (c_hex(l2_offset), c_hex(l1_index)))
            return -EIO, None
    return qcow2_cache_get(bs, s.l2_table_cache, slice_offset)


@coroutine_fn
def qcow2_get_host_offset(bs: Qcow2BDS, offset: int, nbytes: int) -> tuple[int, int, int, int]:
    """Map a guest range to its first run of equal-typed, contiguous
    (sub)clusters within one L2 table.

    Context: coroutine, s->lock held.
    Returns: (0 or -errno, subcluster type, bytes in the run, host offset;
    for compressed runs the L2 entry itself).  QEMU: qcow2_get_host_offset.
    """
    s = bs.opaque
    cs, cb = s.cluster_size, s.cluster_bits
    oic = offset & (cs - 1)
    l2_index = (offset >> cb) & (s.l2_slice_size - 1)    # offset_to_l2_slice_index
    needed = min(nbytes + oic, (s.l2_slice_size - l2_index) << cb)
    l1_index = offset_to_l1_index(s, offset)
    l2_offset = s.l1_table[l1_index] & L1E_OFFSET_MASK if l1_index < s.l1_size else 0
    if not l2_offset:
        return 0, QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, needed - oic, 0
    if l2_offset & (cs - 1):
        qcow2_signal_corruption(bs, True, -1, -1, "L2 table offset %s unaligned "
                                "(L1 index: %s)" % (c_hex(l2_offset), c_hex(l1_index)))
        return -EIO, 0, 0, 0
    slice_offset = l2_offset + (((offset >> cb) & (s.l2_size - 1) & ~(s.l2_slice_size - 1))
                                * s.l2_entry_size)
    if slice_offset not in s.l2_table_cache.by_offset \
            and 0 <= qcow2_file_length(bs) <= slice_offset:
        # a slice wholly past the end of the file reads zero-filled in QEMU:
        # nothing allocated (reliability T23 allows it for reads; the
        # write path's l2_load still refuses the table)
        return 0, QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, needed - oic, 0
    ret, e = l2_load(bs, offset, l2_offset, l1_index)
    if ret < 0:
        return ret, 0, 0, 0
    try:
        data = e.data
        ext = s.extended_l2
        l2_entry = get_l2_entry(s, data, l2_index)
        sc_bits = s.subcluster_bits
        sc_index = oic >> sc_bits
        if ext:
            bitmap = get_l2_bitmap(s, data, l2_index)
            t = qcow2_get_subcluster_type(True, l2_entry, bitmap, sc_index, s.has_data_file)
        else:                           # what qcow2_get_subcluster_type does then
            bitmap = 0
            t = _PLAIN_SC[qcow2_get_cluster_type(False, l2_entry, s.has_data_file)]
        if s.qcow_version < 3 and t in (QCOW2_SUBCLUSTER_ZERO_PLAIN, QCOW2_SUBCLUSTER_ZERO_ALLOC):
            qcow2_signal_corruption(bs, True, -1, -1, "Zero cluster entry found in "
                                    "pre-v3 image (L2 offset: %s, L2 index: %s)"
                                    % (c_hex(l2_offset), c_hex(l2_index)))
            return -EIO, 0, 0, 0
        if t == QCOW2_SUBCLUSTER_INVALID:
            # QEMU's message has two spaces here (not in the write path's)
            qcow2_signal_corruption(bs, True, -1, -1, "Invalid cluster entry found "
                                    " (L2 offset: %s, L2 index: %s)"
                                    % (c_hex(l2_offset), c_hex(l2_index)))
            return -EIO, 0, 0, 0
        if t == QCOW2_SUBCLUSTER_COMPRESSED:
            if s.has_data_file:
                qcow2_signal_corruption(bs, True, -1, -1, "Compressed cluster entry found "
                                        "in image with external data file (L2 offset: "
                                        "%s, L2 index: %s)" % (c_hex(l2_offset),
                                                               c_hex(l2_index)))
                return -EIO, 0, 0, 0
            return 0, t, min(cs - oic, nbytes), l2_entry
        host = 0
        if t in _HOST_TYPES:
            hc = l2_entry & L2E_OFFSET_MASK
            if hc & (cs - 1):
                qcow2_signal_corruption(bs, True, -1, -1, "Cluster allocation offset "
                                        "%s unaligned (L2 offset: %s, L2 index: %s)"
                                        % (c_hex(hc), c_hex(l2_offset), c_hex(l2_index)))
                return -EIO, 0, 0, 0
            host = hc + oic
            if s.has_data_file and host != offset:    # (QEMU's message has the ")")
                qcow2_signal_corruption(bs, True, -1, -1, "External data file host cluster "
                                        "offset %s does not match guest cluster offset: "
                                        "%s, L2 index: %s)" % (c_hex(hc), c_hex(offset - oic),
                                                               c_hex(l2_index)))
                return -EIO, 0, 0, 0
        # count the run
        if not ext:
            n_needed = (needed + cs - 1) >> cb
            base = l2_entry & L2E_OFFSET_MASK
            count = 1
            while count < n_needed:
                ent = get_l2_entry(s, data, l2_index + count)
                t2 = _PLAIN_SC[qcow2_get_cluster_type(False, ent, s.has_data_file)]
                if t2 != t or (t in _HOST_TYPES and (ent & L2E_OFFSET_MASK) != base + (count << cb)):
                    break
                count += 1
            avail = min(count << cb, needed) - oic
        else:
            scs = s.subcluster_size
            n_sc_needed = (needed + scs - 1) >> sc_bits
            base = l2_entry & L2E_OFFSET_MASK
            count, idx, sci, ent, bm = 0, l2_index, sc_index, l2_entry, bitmap
            while True:
                t2 = qcow2_get_subcluster_type(True, ent, bm, sci, s.has_data_file)
                if t2 != t or (t in _HOST_TYPES and (ent & L2E_OFFSET_MASK)
                               != base + ((idx - l2_index) << cb)):
                    break
                count += 1
                if (sc_index + count) >= n_sc_needed:
                    break
                sci += 1
                if sci == 32:
                    sci, idx = 0, idx + 1
                    ent = get_l2_entry(s, data, idx)
                    bm = get_l2_bitmap(s, data, idx)
            avail = min((sc_index + count) << sc_bits, needed) - oic
        return 0, t, min(avail, nbytes), host
    finally:
        qcow2_cache_put(s.l2_table_cache, e)


@coroutine_fn
def qcow2_write_l1_entry(bs: Qcow2BDS, l1_index: int) -> int:
    """Write the piece of L1 that holds ``l1_index``, and flush.
    QEMU: qcow2_write_l1_entry."""
    s = bs.opaque
    # as little as the file lets us write: one entry, or its alignment
    nentries = max(8, min(bs.file.bs.bl.request_alignment, s.l1_size * 8)) // 8
    start = l1_index - l1_index % nentries
    n = min(nentries, s.l1_size - start)
    buf = struct.pack(">%dQ" % nentries, *(s.l1_table[start:start + n] + [0] * (nentries - n)))
    off = s.l1_table_offset + start * 8
    ret = qcow2_pre_write_overlap_check(bs, QCOW2_OL_ACTIVE_L1, off, len(buf))
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_L1_UPDATE)
    ret = qcow2_co_pwrite_file(bs, off, buf)
    if ret < 0:
        return ret
    return qcow2_co_flush_file(bs)


@coroutine_fn
def qcow2_grow_l1_table(bs: Qcow2BDS, min_size: int, exact: bool = False) -> int:
    """Move the L1 table to a larger copy (for the VM state area past the
    disk, or ``exact`` for a resize): allocate, write and flush the new
    table, switch the header, free the old one.  Returns 0 or -errno.
    QEMU: qcow2_grow_l1_table."""
    s = bs.opaque
    if min_size <= s.l1_size:
        return 0
    new_size = max(s.l1_size, 1)
    while min_size > new_size:
        new_size = (new_size * 3 + 1) // 2
    if exact:
        new_size = min_size
    if new_size * 8 > QCOW_MAX_L1_SIZE:
        return -EFBIG
    table = list(s.l1_table) + [0] * (new_size - s.l1_size)
    BLKDBG_EVENT(bs.file, BLKDBG_L1_GROW_ALLOC_TABLE)
    new_off = qcow2_alloc_clusters(bs, new_size * 8)
    if new_off < 0:
        return new_off
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret >= 0:
        ret = qcow2_pre_write_overlap_check(bs, 0, new_off, new_size * 8)
    if ret >= 0:
        BLKDBG_EVENT(bs.file, BLKDBG_L1_GROW_WRITE_TABLE)
        ret = qcow2_co_pwrite_file(bs, new_off, struct.pack(">%dQ" % new_size, *table))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret >= 0:
        BLKDBG_EVENT(bs.file, BLKDBG_L1_GROW_ACTIVATE_TABLE)
        ret = qcow2_co_pwrite_file(bs, 36, struct.pack(">IQ", new_size, new_off))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        qcow2_free_clusters(bs, new_off, new_size * 8, QCOW2_DISCARD_OTHER)
        return ret
    old_off, old_size = s.l1_table_offset, s.l1_size
    s.l1_table, s.l1_table_offset, s.l1_size = table, new_off, new_size
    if old_size:
        qcow2_free_clusters(bs, old_off, old_size * 8, QCOW2_DISCARD_OTHER)
    return 0


@coroutine_fn
def l2_allocate(bs: Qcow2BDS, l1_index: int) -> int:
    """Allocate a new L2 table for ``l1_index`` (a copy of a shared one, or
    zeroes), write it, then point L1 at it.  QEMU: l2_allocate."""
    s = bs.opaque
    cs = s.cluster_size
    old_entry = s.l1_table[l1_index]
    old = old_entry & L1E_OFFSET_MASK
    l2_offset = qcow2_alloc_clusters(bs, cs)
    if l2_offset < 0:
        return l2_offset
    if l2_offset == 0:
        qcow2_signal_corruption(bs, True, -1, -1, "Preventing invalid allocation "
                                "of L2 table at offset 0")
        return -EIO
    ret = _l2_allocate_write(bs, l1_index, l2_offset, old)
    if ret < 0:
        # give the new table back; the L1 entry keeps its old value
        s.l1_table[l1_index] = old_entry
        qcow2_free_clusters(bs, l2_offset, cs, QCOW2_DISCARD_ALWAYS)
        return ret
    if old:
        qcow2_free_clusters(bs, old, cs, QCOW2_DISCARD_OTHER)
    return 0


@coroutine_fn
def _l2_allocate_write(bs: Qcow2BDS, l1_index: int, l2_offset: int, old: int) -> int:
    """Fill the new L2 table (copy or zeroes), write it, point L1 at it."""
    s = bs.opaque
    cs = s.cluster_size
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        return ret
    slice_bytes = s.l2_table_cache.table_size
    for pos in range(0, cs, slice_bytes):      # one cache slice at a time
        ret, e = qcow2_cache_get_empty(bs, s.l2_table_cache, l2_offset + pos)
        if ret < 0:
            return ret
        if old:
            BLKDBG_EVENT(bs.file, BLKDBG_L2_ALLOC_COW_READ)
            ret, o = qcow2_cache_get(bs, s.l2_table_cache, old + pos)
            if ret < 0:
                qcow2_cache_put(s.l2_table_cache, e)
                return ret
            e.data[:] = o.data
            qcow2_cache_put(s.l2_table_cache, o)
        else:
            e.data[:] = bytes(slice_bytes)
        BLKDBG_EVENT(bs.file, BLKDBG_L2_ALLOC_WRITE)
        qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
        qcow2_cache_put(s.l2_table_cache, e)
    ret = qcow2_cache_flush(bs, s.l2_table_cache)
    if ret < 0:
        return ret
    s.l1_table[l1_index] = l2_offset | QCOW_OFLAG_COPIED
    return qcow2_write_l1_entry(bs, l1_index)


@coroutine_fn
def get_cluster_table(bs: Qcow2BDS, offset: int) -> tuple[int, Any, int]:
    """The writable L2 table for ``offset`` (allocated or copied as needed).
    Returns: (0 or -errno, cache entry, l2_index).  QEMU: get_cluster_table."""
    s = bs.opaque
    l1_index = offset_to_l1_index(s, offset)
    if l1_index >= s.l1_size:
        ret = qcow2_grow_l1_table(bs, l1_index + 1)
        if ret < 0:
            return ret, None, 0
    ent = s.l1_table[l1_index]
    l2_offset = ent & L1E_OFFSET_MASK
    if l2_offset & (s.cluster_size - 1):
        qcow2_signal_corruption(bs, True, -1, -1, "L2 table offset %s unaligned "
                                "(L1 index: %s)" % (c_hex(l2_offset), c_hex(l1_index)))
        return -EIO, None, 0
    if not (ent & QCOW_OFLAG_COPIED and l2_offset):
        ret = l2_allocate(bs, l1_index)
        if ret < 0:
            return ret, None, 0
        l2_offset = s.l1_table[l1_index] & L1E_OFFSET_MASK
    ret, e = l2_load(bs, offset, l2_offset, l1_index)
    if ret < 0:
        return ret, None, 0
    return 0, e, offset_to_l2_slice_index(s, offset)


@coroutine_fn
def qcow2_wait_cluster_allocs(bs: Qcow2BDS, offset: int, nbytes: int) -> None:
    """Wait until no allocation in flight overlaps the guest range.

    Zeroing or discarding clusters while an allocating write (e.g. the
    fallback of a partial-cluster write-zeroes, which copies the rest of the
    cluster from the backing file) is between its allocation and its L2
    update would let that update overwrite the zero flag and bring backing
    data back outside both requests (found by gqemu stress).

    Context: coroutine, s->lock held (dropped while waiting).
    QEMU: handle_dependencies, as the allocating path applies it.
    """
    s = bs.opaque
    cb = s.cluster_bits
    end = offset + nbytes
    waited = True
    while waited:
        waited = False
        for m in s.cluster_allocs:
            if end > m.offset and offset < m.offset + (m.nb_clusters << cb):
                qemu_co_queue_wait(m.dependent_requests, s.lock)
                waited = True
                break
