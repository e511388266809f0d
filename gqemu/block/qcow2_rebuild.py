"""Rebuilding a qcow2 refcount structure that cannot be trusted
(``qemu-img check -r all``), as QEMU 7.2 does it: each refcount block goes
in the first free cluster of the range it covers (or the first free one
after it), the in-memory refcounts are written as they are, then the table
goes in the first run of free clusters from the start of the file; when the
table's own clusters need a refcount block the table did not have room
for, the table grows and is placed again (the first placement stays
allocated: a leak the check then repairs).  Finally the header is switched.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2,
gqemu.block.qcow2_check (it imports this module).

QEMU: block/qcow2-refcount.c rebuild_refcount_structure,
rebuild_refcounts_write_refblocks, alloc_clusters_imrt.
"""
from __future__ import annotations

import os
import struct

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_cache import qcow2_cache_empty
from gqemu.block.qcow2_calculate_refcounts import BdrvCheckResult, _Imrt
from gqemu.block.qcow2_overlap import (error_report, qcow2_co_flush_file, qcow2_co_pwrite_file,
                                       qcow2_pre_write_overlap_check)
from gqemu.block.qcow2_refcount_ro import refcount_block_bytes
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2Cache


def alloc_clusters_imrt(counts: list[int], n: int, first_free: list[int]) -> int:
    """The first run of ``n`` free clusters from ``first_free[0]``, taken
    (refcount 1); the in-memory table grows past the end of the file when
    no run fits.  ``first_free[0]`` becomes the first free cluster seen.
    Returns the run's first cluster.  QEMU: alloc_clusters_imrt."""
    cluster = first_free[0]
    size = len(counts)
    run = 0
    first_gap = True
    while cluster < size and run < n:
        if not counts[cluster]:
            run += 1
            if first_gap:
                first_free[0] = cluster
                first_gap = False
        else:
            run = 0
        cluster += 1
    if run < n:
        counts.extend([0] * (cluster + n - run - size))
    cluster -= run
    for i in range(n):
        counts[cluster + i] = 1
    return cluster


@coroutine_fn
def rebuild_refcounts_write_refblocks(bs: Qcow2BDS, counts: list[int], first: int,
                                      end: int, reftable: list[int]) -> int:
    """Place and write the refcount blocks covering the clusters in use in
    [first, end).  Returns 1 when ``reftable`` grew, 0 when not, or -errno.
    QEMU: rebuild_refcounts_write_refblocks."""
    s = bs.opaque
    cs, rbb = s.cluster_size, s.refcount_block_bits
    rbs = 1 << rbb
    first_free = [0]
    grown = 0
    cluster = first
    while cluster < end:
        if not counts[cluster]:
            cluster += 1
            continue
        index = cluster >> rbb
        start = index << rbb
        if index < len(reftable) and reftable[index]:
            offset = reftable[index]
        else:
            first_free[0] = max(first_free[0], start)
            c = alloc_clusters_imrt(counts, 1, first_free)
            offset = c * cs
            end = max(end, c + 1)
            if len(reftable) <= index:
                want = -(-(index + 1) * 8 // cs) * cs // 8
                reftable.extend([0] * (want - len(reftable)))
                grown = 1
            reftable[index] = offset
        s.highest_alloc = max(s.highest_alloc, len(counts) * cs)
        ret = qcow2_pre_write_overlap_check(bs, 0, offset, cs)
        if ret >= 0:
            ret = qcow2_co_pwrite_file(bs, offset, refcount_block_bytes(
                counts[start:start + rbs], s.refcount_order, cs))
        if ret < 0:
            error_report("ERROR writing refblock: %s" % os.strerror(-ret))
            return ret
        cluster = start + rbs
    return grown


@coroutine_fn
def rebuild_refcount_structure(bs: Qcow2BDS, res: BdrvCheckResult,
                               imrt: _Imrt) -> int:
    """Write a fresh refcount structure from the in-memory refcounts and
    switch the header to it.  ``imrt`` keeps the grown in-memory table (the
    recount after the rebuild covers it).  Returns 0 or -errno.
    QEMU: rebuild_refcount_structure."""
    s = bs.opaque
    cs = s.cluster_size
    counts = imrt.counts
    if imrt.extra:                  # counted just past the end of the file
        top = max(imrt.extra) + 1
        if top > len(counts):
            counts.extend([0] * (top - len(counts)))
        for k, v in imrt.extra.items():
            counts[k] = v
        imrt.extra.clear()
    _drop_cache(s.refcount_block_cache)
    reftable: list[int] = []
    changed = rebuild_refcounts_write_refblocks(bs, counts, 0, len(counts), reftable)
    while changed > 0:
        clusters = -(-len(reftable) * 8 // cs)
        start = alloc_clusters_imrt(counts, clusters, [0])
        changed = rebuild_refcounts_write_refblocks(bs, counts, start, start + clusters,
                                                    reftable)
    if changed < 0:
        return changed
    table_off = start * cs
    s.highest_alloc = max(s.highest_alloc, len(counts) * cs)
    data = struct.pack(">%dQ" % len(reftable), *reftable)
    ret = qcow2_pre_write_overlap_check(bs, 0, table_off, len(data))
    if ret >= 0:
        ret = qcow2_co_pwrite_file(bs, table_off, data)
    if ret < 0:
        error_report("ERROR writing reftable: %s" % os.strerror(-ret))
        return ret
    ret = qcow2_co_pwrite_file(bs, 48, struct.pack(">QI", table_off, clusters))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        error_report("ERROR setting reftable: %s" % os.strerror(-ret))
        return ret
    s.refcount_table = reftable
    s.refcount_table_offset = table_off
    s.refcount_table_size = len(reftable)
    s.free_cluster_index = 0
    return 0


def _drop_cache(c: Qcow2Cache) -> None:
    qcow2_cache_empty(c)
