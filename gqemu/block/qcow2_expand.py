"""Turning zero clusters into something a qcow2 v2 reader understands,
for the downgrade to compat=0.10: without a backing file a plain zero
cluster simply becomes unallocated; otherwise (and for preallocated zero
clusters) it becomes a data cluster written with zeroes.  The active L2
tables go through the cache, the snapshots' L2 tables are read and written
on disk; a shared L2 table gives its new clusters its own refcount.

Context: coroutine.  Returns 0 or -errno.
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2-cluster.c (qcow2_expand_zero_clusters,
expand_zero_clusters_in_l1).
"""
from __future__ import annotations

import errno
import os
import struct
import sys
from typing import Any, Callable, Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.io import bdrv_co_pwrite_zeroes
from gqemu.block.qcow2_cache import (
    qcow2_cache_depends_on_flush, qcow2_cache_empty, qcow2_cache_entry_mark_dirty,
    qcow2_cache_flush, qcow2_cache_get, qcow2_cache_put)
from gqemu.block.qcow2_header import (
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, QCOW_MAX_L1_SIZE, QCOW_OFLAG_COPIED, Qcow2OpenError,
    c_hex, qcow2_validate_table)
from gqemu.block.qcow2_l2 import (
    QCOW2_CLUSTER_ZERO_ALLOC, QCOW2_CLUSTER_ZERO_PLAIN, get_l2_entry,
    qcow2_get_cluster_type, set_l2_entry)
from gqemu.block.block_int import error_report
from gqemu.block.qcow2_overlap import (
    qcow2_co_pread_file, qcow2_co_pwrite_file, qcow2_pre_write_overlap_check,
    qcow2_signal_corruption)
from gqemu.block.qcow2_refcount import (
    qcow2_alloc_clusters, qcow2_free_clusters, qcow2_get_refcount, update_refcount)
from gqemu.block.qcow2_state import QCOW2_OL_ACTIVE_L2, QCOW2_OL_INACTIVE_L2, Qcow2BDS

StatusCB = Callable[[Any, int, int], None]


class _Walk:
    """The L1 entries visited so far, of all tables, for the progress."""

    def __init__(self, total: int, status_cb: Optional[StatusCB]) -> None:
        self.visited = 0
        self.total = total
        self.status_cb = status_cb

    def step(self, bs: Any) -> None:
        self.visited += 1
        if self.status_cb is not None:
            self.status_cb(bs, self.visited, self.total)


@coroutine_fn
def _expand_entry(bs: Qcow2BDS, data: bytearray, j: int, l2_offset: int,
                  l2_refcount: int, base: int = 0) -> tuple[int, bool]:
    """Expand L2 entry ``j`` (of a slice whose first entry is ``base`` in
    its table) if it is a zero cluster.
    Returns: (0 or -errno, whether the entry changed)."""
    s = bs.opaque
    entry = get_l2_entry(s, data, j)
    ctype = qcow2_get_cluster_type(s.extended_l2, entry)
    if ctype not in (QCOW2_CLUSTER_ZERO_PLAIN, QCOW2_CLUSTER_ZERO_ALLOC):
        return 0, False
    offset = entry & L2E_OFFSET_MASK
    fresh = ctype == QCOW2_CLUSTER_ZERO_PLAIN
    if fresh:
        if bs.backing is None:
            set_l2_entry(s, data, j, 0)       # nothing below: unallocated reads as zero
            return 0, True
        offset = qcow2_alloc_clusters(bs, s.cluster_size)
        if offset < 0:
            return offset, False
        if l2_refcount > 1:                    # a shared L2 table: one ref per sharer
            ret = update_refcount(bs, offset, s.cluster_size, l2_refcount - 1, False)
            if ret < 0:
                qcow2_free_clusters(bs, offset, s.cluster_size)
                return ret, False
    if offset & (s.cluster_size - 1):
        qcow2_signal_corruption(bs, True, -1, -1, "Cluster allocation offset %s unaligned "
                                "(L2 offset: %s, L2 index: %s)"
                                % (c_hex(offset), c_hex(l2_offset), c_hex(base + j)))
        if fresh:
            qcow2_free_clusters(bs, offset, s.cluster_size, True)
        return -errno.EIO, False
    ret = qcow2_pre_write_overlap_check(bs, 0, offset, s.cluster_size)
    if ret >= 0:
        ret = bdrv_co_pwrite_zeroes(bs.file, offset, s.cluster_size, 0)
    if ret < 0:
        if fresh:
            qcow2_free_clusters(bs, offset, s.cluster_size, True)
        return ret, False
    set_l2_entry(s, data, j, offset | QCOW_OFLAG_COPIED if l2_refcount == 1 else offset)
    return 0, True


@coroutine_fn
def expand_zero_clusters_in_l1(bs: Qcow2BDS, l1_table: list[int], active: bool,
                               walk: _Walk) -> int:
    """Expand the zero clusters of every L2 table of one L1 table.
    QEMU: expand_zero_clusters_in_l1."""
    s = bs.opaque
    assert not s.extended_l2               # the downgrade refuses subclusters first
    cs = s.cluster_size
    for i, l1_entry in enumerate(l1_table):
        l2_offset = l1_entry & L1E_OFFSET_MASK
        if not l2_offset:
            walk.step(bs)
            continue
        if l2_offset & (cs - 1):
            qcow2_signal_corruption(bs, True, -1, -1, "L2 table offset %s unaligned "
                                    "(L1 index: %s)" % (c_hex(l2_offset), c_hex(i)))
            return -errno.EIO
        ret, l2_refcount = qcow2_get_refcount(bs, l2_offset >> s.cluster_bits)
        if ret < 0:
            return ret
        ret = _expand_l2(bs, l2_offset, l2_refcount, active)
        if ret < 0:
            return ret
        walk.step(bs)
    return 0


@coroutine_fn
def _expand_l2(bs: Qcow2BDS, l2_offset: int, l2_refcount: int, active: bool) -> int:
    """One L2 table, slice by slice (the active ones through the L2 cache,
    whose entries may be slices: l2-cache-entry-size).
    QEMU: expand_zero_clusters_in_l1 (the slice loop)."""
    s = bs.opaque
    n = s.l2_slice_size if active else s.l2_size
    nbytes = n * s.l2_entry_size
    for k in range(s.l2_size // n):
        off = l2_offset + k * nbytes
        e: Any = None
        if active:
            ret, e = qcow2_cache_get(bs, s.l2_table_cache, off)
            data = e.data if ret >= 0 else bytearray()
        else:
            ret, data = qcow2_co_pread_file(bs, off, nbytes)
        if ret < 0:
            return ret
        dirty = False
        for j in range(n):
            ret, changed = _expand_entry(bs, data, j, l2_offset, l2_refcount, k * n)
            if ret < 0:
                if e is not None:
                    qcow2_cache_put(s.l2_table_cache, e)
                return ret
            dirty = dirty or changed
        if active:
            if dirty:
                qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
                qcow2_cache_depends_on_flush(s.l2_table_cache)
            qcow2_cache_put(s.l2_table_cache, e)
        elif dirty:
            ret = qcow2_pre_write_overlap_check(bs, QCOW2_OL_INACTIVE_L2 | QCOW2_OL_ACTIVE_L2,
                                                off, nbytes)
            if ret >= 0:
                ret = qcow2_co_pwrite_file(bs, off, data)
            if ret < 0:
                return ret
    return 0


@coroutine_fn
def qcow2_expand_zero_clusters(bs: Qcow2BDS, status_cb: Optional[StatusCB]) -> int:
    """Expand the zero clusters of the active L1 table, then (with the L2
    cache written back and emptied, since inactive tables may be active
    ones too) of every snapshot's.  QEMU: qcow2_expand_zero_clusters."""
    s = bs.opaque
    total = s.l1_size + sum(sn.l1_size for sn in s.snapshots)
    walk = _Walk(total, status_cb)
    ret = expand_zero_clusters_in_l1(bs, s.l1_table[:s.l1_size], True, walk)
    if ret < 0:
        return ret
    ret = qcow2_cache_flush(bs, s.l2_table_cache)
    if ret < 0:
        return ret
    qcow2_cache_empty(s.l2_table_cache)
    for sn in s.snapshots:
        try:
            qcow2_validate_table(sn.l1_table_offset, sn.l1_size, 8, QCOW_MAX_L1_SIZE,
                                 s.cluster_size, "Snapshot L1 table")
        except Qcow2OpenError as err:
            # QEMU: error_report_err, in a tool prefixed with its name
            error_report("%s: %s" % (os.path.basename(sys.argv[0]) or "gqemu", err.msg))
            return -err.errno
        ret, buf = qcow2_co_pread_file(bs, sn.l1_table_offset, sn.l1_size * 8)
        if ret < 0:
            return ret
        l1 = list(struct.unpack(">%dQ" % sn.l1_size, buf))
        ret = expand_zero_clusters_in_l1(bs, l1, False, walk)
        if ret < 0:
            return ret
    return 0
