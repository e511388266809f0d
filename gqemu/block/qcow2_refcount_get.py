"""qcow2 reference counts, reading: the refcount table loaded at open, one
cluster's refcount, the run of free or used clusters a refcount block
holds from a cluster on, a refcount block through the cache.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2,
gqemu.block.qcow2_refcount (it imports this module).

QEMU: block/qcow2-refcount.c qcow2_refcount_init, qcow2_get_refcount,
load_refcount_block.
"""
from __future__ import annotations

from errno import EIO
import struct
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.blkdebug_events import BLKDBG_REFBLOCK_LOAD, BLKDBG_REFTABLE_LOAD
from gqemu.block.qcow2_cache import qcow2_cache_get, qcow2_cache_put
from gqemu.block.qcow2_header import REFT_OFFSET_MASK, c_hex
from gqemu.block.qcow2_refcount_ro import get_refcount_ro, refcount_run
from gqemu.block.qcow2_overlap import qcow2_co_pread_file, qcow2_signal_corruption
from gqemu.block.qcow2_state import Qcow2BDS

@coroutine_fn
def qcow2_refcount_init(bs: Qcow2BDS) -> int:
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
def qcow2_get_refcount(bs: Qcow2BDS, cluster_index: int) -> tuple[int, int]:
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
def _refcount_run(bs: Qcow2BDS, cluster_index: int, want: int) -> tuple[int, bool, int]:
    """(0, free, n): the n clusters from ``cluster_index`` on, within its
    refcount block, all free or all used (a free run at most ``want``
    long); or (-errno, False, 0) as qcow2_get_refcount fails."""
    s = bs.opaque
    ri = cluster_index >> s.refcount_block_bits
    bi = cluster_index & (s.refcount_block_size - 1)
    left = s.refcount_block_size - bi
    rb = s.refcount_table[ri] & REFT_OFFSET_MASK if ri < s.refcount_table_size else 0
    if not rb:
        return 0, True, min(left, want)
    ret, rc = qcow2_get_refcount(bs, cluster_index)       # checks, loads the block
    if ret < 0:
        return ret, False, 0
    e = s.refcount_block_cache.by_offset.get(rb)
    if e is None:
        return 0, rc == 0, 1
    free, n = refcount_run(e.data, s.refcount_order, bi, s.refcount_block_size, want)
    return 0, free, n


@coroutine_fn
def load_refcount_block(bs: Qcow2BDS, offset: int) -> tuple[int, Any]:
    """QEMU: load_refcount_block (the event fires even on a cache hit)."""
    s = bs.opaque
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_LOAD)
    return qcow2_cache_get(bs, s.refcount_block_cache, offset)
