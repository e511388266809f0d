"""qcow2 make_empty (``qemu-img commit`` empties the committed image):
a v3 image without snapshots or bitmaps whose L1 table and three more
clusters fit one refcount block is rebuilt from scratch (header, reftable
at cluster 1, refblock at 2, a zeroed L1 table at 3, the file cut after
it), with the dirty bit set while the refcounts are wrong; any other
image (also one with an external data file) has every cluster discarded (qcow2_resize.qcow2_co_make_empty).

A failure after the first metadata write leaves refcounts that match
nothing: the node is then disabled (QEMU ejects it), so closing writes
nothing more and the next open repairs the image from the dirty bit.

Context: coroutine.  Returns 0 or -errno.
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (qcow2_make_empty, make_completely_empty).
"""
from __future__ import annotations

import struct

from gqemu.coroutine import coroutine_fn
from gqemu.block.blkdebug_events import (BLKDBG_EMPTY_IMAGE_PREPARE, BLKDBG_L1_UPDATE,
                                         BLKDBG_REFBLOCK_ALLOC, BLKDBG_REFTABLE_UPDATE)
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.io import bdrv_co_pwrite_zeroes
from gqemu.block.qcow2_cache import qcow2_cache_empty, qcow2_cache_flush
from gqemu.block.qcow2_header_update import qcow2_mark_clean
from gqemu.block.qcow2_overlap import qcow2_co_flush_file, qcow2_co_pwrite_file, \
    qcow2_mark_dirty, qcow2_take_out_of_service
from gqemu.block.qcow2_refcount import qcow2_alloc_clusters
from gqemu.block.qcow2_resize import qcow2_co_make_empty as qcow2_co_discard_all
from gqemu.block.qcow2_state import Qcow2BDS

_HDR_L1_TABLE_OFFSET = 40          # l1_table_offset, refcount_table_offset/_clusters


@coroutine_fn
def qcow2_co_make_empty(bs: Qcow2BDS) -> int:
    """QEMU: qcow2_make_empty."""
    s = bs.opaque
    l1_clusters = -(-s.l1_size // (s.cluster_size // 8))
    if s.qcow_version >= 3 and not s.snapshots and not getattr(s, "nb_bitmaps", 0) \
            and 3 + l1_clusters <= s.refcount_block_size and not s.has_data_file:
        return make_completely_empty(bs)
    return qcow2_co_discard_all(bs)


@coroutine_fn
def _cache_empty(bs: Qcow2BDS, c: object) -> int:
    """Write the cache back, then forget it.  QEMU: qcow2_cache_empty."""
    ret = qcow2_cache_flush(bs, c)  # type: ignore[arg-type]
    if ret >= 0:
        qcow2_cache_empty(c)  # type: ignore[arg-type]
    return ret


@coroutine_fn
def make_completely_empty(bs: Qcow2BDS) -> int:
    """Rebuild the image as a fresh one of the same size.
    QEMU: make_completely_empty."""
    s = bs.opaque
    cs = s.cluster_size
    for c in (s.l2_table_cache, s.refcount_block_cache):
        ret = _cache_empty(bs, c)
        if ret < 0:
            return ret
    ret = qcow2_mark_dirty(bs)             # the refcounts are about to go wrong
    if ret < 0:
        return ret
    ret = _rebuild(bs, cs)
    if ret < 0:
        qcow2_take_out_of_service(bs)
        return ret
    ret = qcow2_mark_clean(bs)
    if ret < 0:
        return ret
    from gqemu.block.io_truncate import bdrv_co_truncate
    l1_clusters = -(-s.l1_size // (cs // 8))
    ret, _msg = bdrv_co_truncate(bs.file.bs, (3 + l1_clusters) * cs)
    return ret


@coroutine_fn
def _rebuild(bs: Qcow2BDS, cs: int) -> int:
    """The part after which the on-disk refcounts no longer describe the
    file until it completes.  Returns 0 or -errno."""
    s = bs.opaque
    l1_clusters = -(-s.l1_size // (cs // 8))
    BLKDBG_EVENT(bs.file, BLKDBG_L1_UPDATE)
    ret = bdrv_co_pwrite_zeroes(bs.file, s.l1_table_offset, l1_clusters * cs, 0)
    if ret < 0:
        return ret
    s.l1_table[:] = [0] * s.l1_size
    BLKDBG_EVENT(bs.file, BLKDBG_EMPTY_IMAGE_PREPARE)
    # reftable, first refblock and L1 table go to clusters 1, 2 and 3...
    ret = bdrv_co_pwrite_zeroes(bs.file, cs, (2 + l1_clusters) * cs, 0)
    if ret < 0:
        return ret
    BLKDBG_EVENT(bs.file, BLKDBG_L1_UPDATE)
    BLKDBG_EVENT(bs.file, BLKDBG_REFTABLE_UPDATE)
    ret = qcow2_co_pwrite_file(bs, _HDR_L1_TABLE_OFFSET, struct.pack(">QQI", 3 * cs, cs, 1))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    s.l1_table_offset = 3 * cs
    s.refcount_table_offset = cs
    s.refcount_table_size = cs // 8
    s.refcount_table = [0] * (cs // 8)
    BLKDBG_EVENT(bs.file, BLKDBG_REFBLOCK_ALLOC)
    # ... the refblock entered in the reftable ...
    ret = qcow2_co_pwrite_file(bs, cs, struct.pack(">Q", 2 * cs))
    if ret >= 0:
        ret = qcow2_co_flush_file(bs)
    if ret < 0:
        return ret
    s.refcount_table[0] = 2 * cs
    # ... and the four clusters (or more, for a longer L1 table) counted
    s.free_cluster_index = 0
    offset = qcow2_alloc_clusters(bs, 3 * cs + s.l1_size * 8)
    if offset < 0:
        return offset
    assert offset == 0, "first cluster in emptied image is in use"
    return 0
