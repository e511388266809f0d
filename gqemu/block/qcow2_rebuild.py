"""Rebuilding a qcow2 refcount structure that cannot be trusted
(``qemu-img check -r all``): fresh refcount blocks and table written past
everything in use, describing themselves, then switched in the header.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c rebuild_refcount_structure.
"""
from __future__ import annotations

import struct
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_cache import qcow2_co_flush_file, qcow2_co_pwrite_file
from gqemu.block.qcow2_refcount import set_refcount_ro


@coroutine_fn
def rebuild_refcount_structure(bs: Any, res: Any, imrt: Any) -> int:
    """Write a fresh refcount table and blocks past everything in use,
    describing themselves, and switch the header to them.
    QEMU: rebuild_refcount_structure."""
    s = bs.opaque
    cs, rbs = s.cluster_size, s.refcount_block_size
    counts = imrt.counts
    start = len(counts)
    while start and not counts[start - 1]:
        start -= 1
    nb_blocks = table_clusters = 1
    while True:
        total = start + nb_blocks + table_clusters
        need_blocks = (total + rbs - 1) // rbs
        need_table = (need_blocks * 8 + cs - 1) // cs
        if need_blocks <= nb_blocks and need_table <= table_clusters:
            break
        nb_blocks, table_clusters = max(nb_blocks, need_blocks), max(table_clusters, need_table)
    counts = counts[:start] + [1] * (nb_blocks + table_clusters)
    blocks = bytearray(nb_blocks * cs)
    for k, v in enumerate(counts):
        if v:
            b, idx = divmod(k, rbs)
            set_refcount_ro(memoryview(blocks)[b * cs:(b + 1) * cs], s.refcount_order,  # type: ignore[arg-type]
                            idx, min(v, s.refcount_max))
    ret = qcow2_co_pwrite_file(bs, start * cs, blocks)
    if ret < 0:
        return ret
    table_entries = table_clusters * cs // 8
    table = [(start + b) * cs for b in range(nb_blocks)] + [0] * (table_entries - nb_blocks)
    table_off = (start + nb_blocks) * cs
    ret = qcow2_co_pwrite_file(bs, table_off, struct.pack(">%dQ" % table_entries, *table))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret >= 0:
        ret = qcow2_co_pwrite_file(bs, 48, struct.pack(">QI", table_off, table_clusters))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    s.refcount_table = table
    s.refcount_table_offset = table_off
    s.refcount_table_size = table_entries
    _drop_cache(s.refcount_block_cache)
    s.free_cluster_index = 0
    return 0


def _drop_cache(c: Any) -> None:
    for e in c.entries:
        e.offset = 0
        e.dirty = False
    c.by_offset.clear()
