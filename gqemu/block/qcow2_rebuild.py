"""Rebuilding a qcow2 refcount structure that cannot be trusted
(``qemu-img check -r all``): fresh refcount blocks and table written past
everything in use, describing themselves, then switched in the header.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-refcount.c rebuild_refcount_structure.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import bdrv_getlength
from gqemu.block.qcow2_cache import qcow2_cache_empty
from gqemu.block.qcow2_overlap import qcow2_co_flush_file, qcow2_co_pwrite_file
from gqemu.block.qcow2_header import QCOW_MAX_REFTABLE_SIZE
from gqemu.block.qcow2_refcount import set_refcount_ro
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2Cache

if TYPE_CHECKING:
    from gqemu.block.qcow2_check import BdrvCheckResult, _Imrt   # it imports us

EFBIG = 27


@coroutine_fn
def rebuild_refcount_structure(bs: Qcow2BDS, res: BdrvCheckResult,
                               imrt: _Imrt) -> int:
    """Write fresh refcount blocks (only those covering referenced clusters)
    and a refcount table at the end of the file, describing themselves, and
    switch the header to them.  A reference far past the end of the file
    (a corrupted pointer) makes the table large, never the file.
    QEMU: rebuild_refcount_structure."""
    s = bs.opaque
    cs, rbs = s.cluster_size, s.refcount_block_size
    flen = bdrv_getlength(bs.file.bs)
    if flen < 0:
        return flen
    used = imrt.nonzero()
    start = (flen + cs - 1) // cs
    nb_blocks = table_clusters = 1
    while True:
        while any(imrt.get(k) for k in range(start, start + nb_blocks + table_clusters)):
            start += 1
        new = range(start, start + nb_blocks + table_clusters)
        blocks = sorted({k // rbs for k in used} | {k // rbs for k in new})
        need_table = ((blocks[-1] + 1) * 8 + cs - 1) // cs
        if len(blocks) <= nb_blocks and need_table <= table_clusters:
            break
        nb_blocks = max(nb_blocks, len(blocks))
        table_clusters = max(table_clusters, need_table)
    if table_clusters * cs > QCOW_MAX_REFTABLE_SIZE:
        return -EFBIG
    s.highest_alloc = max(s.highest_alloc, (start + nb_blocks + table_clusters) * cs)
    data = bytearray(nb_blocks * cs)
    where = {bi: i for i, bi in enumerate(blocks)}
    view = memoryview(data)
    for k in list(used) + list(new):
        v = 1 if k in new else imrt.get(k)
        i = where[k // rbs]
        set_refcount_ro(view[i * cs:(i + 1) * cs], s.refcount_order,  # type: ignore[arg-type]
                        k % rbs, min(v, s.refcount_max))
    ret = qcow2_co_pwrite_file(bs, start * cs, data)
    if ret < 0:
        return ret
    table_entries = table_clusters * cs // 8
    table = [0] * table_entries
    for bi, i in where.items():
        table[bi] = (start + i) * cs
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


def _drop_cache(c: Qcow2Cache) -> None:
    qcow2_cache_empty(c)
