"""Changing the refcount width of a qcow2 image (``qemu-img amend -o
refcount_bits=N``): a new refcount table and new refcount blocks in the
new width are built beside the old ones, the header is switched to them in
one write, and the old structures are freed.

The old refcounts are walked as many times as needed: each walk allocates
(through the old structures) the new refcount blocks that are still
missing, and since those allocations change the refcounts, the walk is
repeated until one allocates nothing; the new table is allocated after each
walk that did.  A last walk converts the refcounts into the new blocks and
writes them.  A refcount that does not fit the new width fails the change
before anything is switched.

Context: coroutine.  Returns (0, "") or (-errno, QEMU's message).
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2-refcount.c (qcow2_change_refcount_order,
walk_over_reftable, alloc_refblock, flush_refblock).
"""
from __future__ import annotations

import errno
import os
import struct
from typing import Any, Callable, Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_cache import (
    qcow2_cache_empty, qcow2_cache_flush, qcow2_cache_get, qcow2_cache_put)
from gqemu.block.qcow2_header import QCOW_MAX_REFTABLE_SIZE, REFT_OFFSET_MASK, c_hex
from gqemu.block.qcow2_header_update import qcow2_update_header
from gqemu.block.qcow2_overlap import (
    qcow2_co_pwrite_file, qcow2_pre_write_overlap_check, qcow2_signal_corruption)
from gqemu.block.qcow2_refcount import qcow2_alloc_clusters, qcow2_free_clusters
from gqemu.block.qcow2_state import Qcow2BDS

StatusCB = Callable[[Any, int, int], None]


class _NewRefcounts:
    """The new structures being built: the table, and the refcount block
    being filled (``block`` is None on the allocating walks)."""

    def __init__(self, order: int, cluster_bits: int) -> None:
        self.order = order
        self.block_size = 1 << (cluster_bits - (order - 3))
        self.table: list[int] = []
        self.table_index = 0
        self.block: Optional[bytearray] = None
        self.allocated = False


@coroutine_fn
def alloc_refblock(bs: Qcow2BDS, new: _NewRefcounts, empty: bool) -> tuple[int, str]:
    """A non-empty new refcount block gets a table entry and a cluster.
    QEMU: alloc_refblock."""
    s = bs.opaque
    if empty:
        return 0, ""
    if new.table_index >= len(new.table):
        per_cluster = s.cluster_size // 8
        size = -(-(new.table_index + 1) // per_cluster) * per_cluster
        if size > QCOW_MAX_REFTABLE_SIZE // 8:
            return -errno.ENOTSUP, ("This operation would make the refcount table grow "
                                    "beyond the maximum size supported by QEMU, aborting")
        new.table += [0] * (size - len(new.table))
    if not new.table[new.table_index]:
        offset = qcow2_alloc_clusters(bs, s.cluster_size)
        if offset < 0:
            return offset, "Failed to allocate refblock: %s" % os.strerror(-offset)
        new.table[new.table_index] = offset
        new.allocated = True
    return 0, ""


@coroutine_fn
def flush_refblock(bs: Qcow2BDS, new: _NewRefcounts, empty: bool) -> tuple[int, str]:
    """Write a completed new refcount block where the table says.
    QEMU: flush_refblock."""
    s = bs.opaque
    if new.table_index < len(new.table) and new.table[new.table_index]:
        offset = new.table[new.table_index]
        ret = qcow2_pre_write_overlap_check(bs, 0, offset, s.cluster_size)
        if ret < 0:
            return ret, "Overlap check failed: %s" % os.strerror(-ret)
        assert new.block is not None
        ret = qcow2_co_pwrite_file(bs, offset, bytes(new.block))
        if ret < 0:
            return ret, "Failed to write refblock: %s" % os.strerror(-ret)
    else:
        assert empty
    return 0, ""


_STRUCT_CODES = {3: "B", 4: "H", 5: "I", 6: "Q"}


def unpack_refcounts(data: Any, order: int) -> list[int]:
    """Every entry of a refcount block (sub-byte entries LSB first).
    QEMU: get_refcount_ro0..6, over a whole block."""
    if order >= 3:
        n = len(data) >> (order - 3)
        return list(struct.unpack(">%d%s" % (n, _STRUCT_CODES[order]), data))
    bits = 1 << order
    mask = (1 << bits) - 1
    shifts = range(0, 8, bits)
    return [(byte >> sh) & mask for byte in bytes(data) for sh in shifts]


def pack_refcounts(block: bytearray, order: int, start: int, values: list[int]) -> None:
    """Store ``values`` from entry ``start`` (byte-aligned: runs start and
    end on multiples of 64 entries, the smallest refcount block).  QEMU: set_refcount_ro0..6, over a range."""
    if order >= 3:
        w = 1 << (order - 3)
        block[start * w:(start + len(values)) * w] = struct.pack(
            ">%d%s" % (len(values), _STRUCT_CODES[order]), *values)
        return
    bits = 1 << order
    per_byte = 8 >> order
    out = bytearray(len(values) // per_byte)
    for i in range(len(out)):
        byte = 0
        for k, v in enumerate(values[i * per_byte:(i + 1) * per_byte]):
            byte |= v << (k * bits)
        out[i] = byte
    block[start // per_byte:start // per_byte + len(out)] = out


@coroutine_fn
def _finish(bs: Qcow2BDS, new: _NewRefcounts, operation: Callable[..., tuple[int, str]],
            empty: bool) -> tuple[int, str]:
    """Hand the completed new block to ``operation``, then start the next
    one from zeroes (entries of missing old blocks are never stored)."""
    ret, msg = operation(bs, new, empty)
    if ret < 0:
        return ret, msg
    new.table_index += 1
    if new.block is not None and not empty:
        new.block[:] = bytes(len(new.block))
    return 0, ""


@coroutine_fn
def walk_over_reftable(bs: Qcow2BDS, new: _NewRefcounts,
                       operation: Callable[..., tuple[int, str]],
                       status_cb: StatusCB, index: int, total: int) -> tuple[int, str]:
    """Read every old refcount (a missing block counts as zeroes), fill the
    new blocks in order and hand each completed one to ``operation`` when
    the next entry comes (or at the end).  Old blocks are converted a run
    at a time: one run never crosses a new block's end.
    QEMU: walk_over_reftable."""
    s = bs.opaque
    new_bits = 1 << new.order
    fill = 0                    # entries of the current new block filled
    empty = True
    ri = 0
    while ri < s.refcount_table_size:       # allocations may grow the old table
        status_cb(bs, index * s.refcount_table_size + ri, total * s.refcount_table_size)
        rb_offset = s.refcount_table[ri] & REFT_OFFSET_MASK
        values: Optional[list[int]] = None   # None: no block, all zero
        if rb_offset:
            if rb_offset & (s.cluster_size - 1):
                qcow2_signal_corruption(bs, True, -1, -1, "Refblock offset %s unaligned "
                                        "(reftable index: %s)" % (c_hex(rb_offset), c_hex(ri)))
                return -errno.EIO, "Image is corrupt (unaligned refblock offset)"
            ret, e = qcow2_cache_get(bs, s.refcount_block_cache, rb_offset)
            if ret < 0:
                return ret, "Failed to retrieve refblock: %s" % os.strerror(-ret)
            values = unpack_refcounts(e.data, s.refcount_order)
            qcow2_cache_put(s.refcount_block_cache, e)
        pos = 0
        while pos < s.refcount_block_size:
            if fill >= new.block_size:
                ret, msg = _finish(bs, new, operation, empty)
                if ret < 0:
                    return ret, msg
                fill, empty = 0, True
            take = min(s.refcount_block_size - pos, new.block_size - fill)
            run = values[pos:pos + take] if values is not None else None
            if run is not None and new_bits < 64 and max(run) >> new_bits:
                k = next(k for k, refcount in enumerate(run) if refcount >> new_bits)
                offset = ((ri << s.refcount_block_bits) + pos + k) << s.cluster_bits
                return -errno.EINVAL, ("Cannot decrease refcount entry width to %d bits: "
                                       "Cluster at offset %s has a refcount of %d"
                                       % (new_bits, c_hex(offset), run[k]))
            if run is not None and any(run):
                empty = False
                if new.block is not None:
                    pack_refcounts(new.block, new.order, fill, run)
            fill += take
            pos += take
        ri += 1
    if fill > 0:
        ret, msg = _finish(bs, new, operation, empty)
        if ret < 0:
            return ret, msg
    status_cb(bs, (index + 1) * s.refcount_table_size, total * s.refcount_table_size)
    return 0, ""


@coroutine_fn
def qcow2_change_refcount_order(bs: Qcow2BDS, refcount_order: int,
                                status_cb: StatusCB) -> tuple[int, str]:
    """Rebuild the refcount structures with ``1 << refcount_order`` bits
    per entry.  QEMU: qcow2_change_refcount_order."""
    s = bs.opaque
    assert s.qcow_version >= 3 and 0 <= refcount_order <= 6
    new = _NewRefcounts(refcount_order, s.cluster_bits)
    table_offset = 0
    allocated_size = 0
    walk_index = 0
    ret, msg = 0, ""
    while True:
        new.allocated = False
        total_walks = max(walk_index + 2, 3)
        ret, msg = walk_over_reftable(bs, new, alloc_refblock, status_cb,
                                      walk_index, total_walks)
        walk_index += 1
        if ret < 0:
            return _cleanup(bs, new.table, table_offset, allocated_size, ret, msg)
        new.table_index = 0
        if not new.allocated:
            break
        if table_offset:
            qcow2_free_clusters(bs, table_offset, allocated_size * 8)
        table_offset = qcow2_alloc_clusters(bs, len(new.table) * 8)
        if table_offset < 0:
            ret = table_offset
            return _cleanup(bs, new.table, 0, 0, ret, "Failed to allocate the new "
                            "reftable: %s" % os.strerror(-ret))
        allocated_size = len(new.table)
    new.block = bytearray(s.cluster_size)
    ret, msg = walk_over_reftable(bs, new, flush_refblock, status_cb, walk_index,
                                  walk_index + 1)
    if ret < 0:
        return _cleanup(bs, new.table, table_offset, allocated_size, ret, msg)
    assert not new.allocated
    size = len(new.table)
    ret = qcow2_pre_write_overlap_check(bs, 0, table_offset, size * 8)
    if ret < 0:
        return _cleanup(bs, new.table, table_offset, allocated_size, ret,
                        "Overlap check failed: %s" % os.strerror(-ret))
    ret = qcow2_co_pwrite_file(bs, table_offset, struct.pack(">%dQ" % size, *new.table))
    if ret < 0:
        return _cleanup(bs, new.table, table_offset, allocated_size, ret,
                        "Failed to write the new reftable: %s" % os.strerror(-ret))
    ret = qcow2_cache_flush(bs, s.refcount_block_cache)
    if ret < 0:
        return _cleanup(bs, new.table, table_offset, allocated_size, ret,
                        "Failed to flush the refblock cache: %s" % os.strerror(-ret))
    old = (s.refcount_order, s.refcount_table_size, s.refcount_table_offset)
    s.refcount_order, s.refcount_table_size, s.refcount_table_offset = (
        refcount_order, size, table_offset)
    ret = qcow2_update_header(bs)
    if ret < 0:
        s.refcount_order, s.refcount_table_size, s.refcount_table_offset = old
        return _cleanup(bs, new.table, table_offset, allocated_size, ret,
                        "Failed to update the qcow2 header: %s" % os.strerror(-ret))
    old_table = s.refcount_table
    qcow2_cache_empty(s.refcount_block_cache)       # blocks of the old width
    s.refcount_table = new.table
    s.refcount_bits = 1 << refcount_order
    s.refcount_max = (1 << s.refcount_bits) - 1
    s.refcount_block_bits = s.cluster_bits - (refcount_order - 3)
    s.refcount_block_size = 1 << s.refcount_block_bits
    # the old structures are now unreferenced: free them through the new ones
    return _cleanup(bs, old_table, old[2], old[1], 0, "")


@coroutine_fn
def _cleanup(bs: Qcow2BDS, table: list[int], table_offset: int, table_size: int,
             ret: int, msg: str) -> tuple[int, str]:
    """Free the refcount blocks of ``table`` and the table's clusters (the
    new ones after a failure, the old ones after the switch)."""
    s = bs.opaque
    for entry in table:
        offset = entry & REFT_OFFSET_MASK
        if offset:
            qcow2_free_clusters(bs, offset, s.cluster_size)
    if table_offset > 0:
        qcow2_free_clusters(bs, table_offset, table_size * 8)
    return ret, msg
