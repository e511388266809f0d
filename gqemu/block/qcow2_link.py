"""qcow2: what follows the data write of an allocating request: the
copy-on-write of the unwritten parts of new clusters (merged with the guest
data into one request when they border it), the L2 update linking the
clusters, or, for a failed request, freeing them.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-cluster.c (perform_cow, do_perform_cow_read/write,
qcow2_alloc_cluster_link_l2, qcow2_alloc_cluster_abort), block/qcow2.c
(qcow2_handle_l2meta).
"""
from __future__ import annotations

import errno

from gqemu.coroutine import (coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock,
                             qemu_co_queue_restart_all)
from gqemu.block.driver import BLKDBG_EVENT
from gqemu.block.blkdebug_events import BLKDBG_COW_READ, BLKDBG_COW_WRITE, BLKDBG_WRITE_AIO
from gqemu.block.io import bdrv_co_pwritev
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_add, qemu_iovec_concat
from gqemu.block.qcow2_alloc import QCowL2Meta
from gqemu.block.qcow2_cache import (qcow2_cache_depends_on_flush, qcow2_cache_entry_mark_dirty,
                                     qcow2_cache_put, qcow2_cache_set_dependency)
from gqemu.block.qcow2_cluster import get_cluster_table
from gqemu.block.qcow2_header import QCOW_OFLAG_COPIED
from gqemu.block.qcow2_l2 import get_l2_bitmap, get_l2_entry, set_l2_bitmap, set_l2_entry
from gqemu.block.qcow2_overlap import qcow2_mark_dirty, qcow2_pre_write_overlap_check
from gqemu.block.qcow2_refcount import qcow2_free_any_cluster, qcow2_free_clusters
from gqemu.block.qcow2_state import Qcow2BDS


@coroutine_fn
def _cow_read(bs: Qcow2BDS, m: QCowL2Meta, off: int, buf: bytearray) -> int:
    """QEMU: do_perform_cow_read (through the driver itself)."""
    if not buf:
        return 0
    BLKDBG_EVENT(bs.file, BLKDBG_COW_READ)
    if bs.drv is None:          # taken out of service while we waited
        return -errno.ENOMEDIUM
    return bs.drv.bdrv_co_preadv(bs, m.offset + off, len(buf), QEMUIOVector([buf]), 0)


@coroutine_fn
def _cow_write(bs: Qcow2BDS, m: QCowL2Meta, off: int, qiov: QEMUIOVector) -> int:
    """QEMU: do_perform_cow_write."""
    if not qiov.size:
        return 0
    s = bs.opaque
    if not s.has_data_file:         # data file writes cannot hit metadata
        ret = qcow2_pre_write_overlap_check(bs, 0, m.alloc_offset + off, qiov.size)
        if ret < 0:
            return ret
    BLKDBG_EVENT(bs.file, BLKDBG_COW_WRITE)
    child = bs.file if s.data_file is None else s.data_file
    return min(bdrv_co_pwritev(child, m.alloc_offset + off, qiov.size, qiov, 0), 0)


@coroutine_fn
def perform_cow(bs: Qcow2BDS, m: QCowL2Meta) -> int:
    """Copy the unwritten head and tail of the new clusters (with the guest
    data when it was merged in).  Context: coroutine, s->lock held (dropped
    for the I/O).  QEMU: perform_cow."""
    s = bs.opaque
    (s_off, s_n), (e_off, e_n) = m.cow_start, m.cow_end
    data_bytes = e_off - (s_off + s_n)
    if (not s_n and not e_n) or m.skip_cow:
        return 0
    merge_reads = bool(s_n and e_n and data_bytes <= 16384)
    qemu_co_mutex_unlock(s.lock)
    if merge_reads:
        whole = bytearray(s_n + data_bytes + e_n)
        ret = _cow_read(bs, m, s_off, whole)
        head, tail = whole[:s_n], whole[s_n + data_bytes:]
    else:
        head, tail = bytearray(s_n), bytearray(e_n)
        ret = _cow_read(bs, m, s_off, head)
        if ret >= 0:
            ret = _cow_read(bs, m, e_off, tail)
    if ret >= 0 and s.crypto is not None:        # the copied data, encrypted
        s.crypto.encrypt(m.offset + s_off, head)
        s.crypto.encrypt(m.offset + e_off, tail)
    if ret >= 0:
        if m.data_qiov is not None:
            q = QEMUIOVector()
            if s_n:
                qemu_iovec_add(q, head)
            qemu_iovec_concat(q, m.data_qiov, 0, data_bytes)
            if e_n:
                qemu_iovec_add(q, tail)
            # one request, announced as both the data write and the COW
            BLKDBG_EVENT(bs.file, BLKDBG_WRITE_AIO)
            ret = _cow_write(bs, m, s_off, q)
        else:
            ret = _cow_write(bs, m, s_off, QEMUIOVector([head]) if s_n else QEMUIOVector())
            if ret >= 0:
                ret = _cow_write(bs, m, e_off, QEMUIOVector([tail]) if e_n else QEMUIOVector())
    qemu_co_mutex_lock(s.lock)
    if ret >= 0:
        qcow2_cache_depends_on_flush(s.l2_table_cache)
    return ret


@coroutine_fn
def qcow2_alloc_cluster_link_l2(bs: Qcow2BDS, m: QCowL2Meta) -> int:
    """COW, then point the L2 entries at the new clusters and free what they
    held.  Context: coroutine, s->lock held.  QEMU: qcow2_alloc_cluster_link_l2."""
    s = bs.opaque
    cb = s.cluster_bits
    ret = perform_cow(bs, m)
    if ret < 0:
        return ret
    if s.use_lazy_refcounts:
        qcow2_mark_dirty(bs)
    else:
        qcow2_cache_set_dependency(bs, s.l2_table_cache, s.refcount_block_cache)
    ret, e, l2_index = get_cluster_table(bs, m.offset)
    if ret < 0:
        return ret
    qcow2_cache_entry_mark_dirty(s.l2_table_cache, e)
    old = []
    for i in range(m.nb_clusters):
        prev = get_l2_entry(s, e.data, l2_index + i)
        if prev:
            old.append(prev)
        set_l2_entry(s, e.data, l2_index + i, (m.alloc_offset + (i << cb)) | QCOW_OFLAG_COPIED)
        if s.extended_l2 and not m.prealloc:
            bm = get_l2_bitmap(s, e.data, l2_index + i)
            w_from = max(m.cow_start[0], i << cb)
            w_to = min(m.cow_end[0] + m.cow_end[1], (i + 1) << cb)
            first = (w_from - (i << cb)) >> s.subcluster_bits
            last = (w_to - 1 - (i << cb)) >> s.subcluster_bits
            mask = ((1 << (last + 1)) - 1) & ~((1 << first) - 1)
            set_l2_bitmap(s, e.data, l2_index + i, (bm | mask) & ~(mask << 32))
    qcow2_cache_put(s.l2_table_cache, e)
    if not m.keep_old_clusters:
        for prev in old:
            qcow2_free_any_cluster(bs, prev, 1)
    return 0


@coroutine_fn
def qcow2_alloc_cluster_abort(bs: Qcow2BDS, m: QCowL2Meta) -> None:
    """Give back the clusters of a failed allocation.
    QEMU: qcow2_alloc_cluster_abort."""
    if not m.keep_old_clusters and not bs.opaque.has_data_file:
        qcow2_free_clusters(bs, m.alloc_offset, m.nb_clusters << bs.opaque.cluster_bits)


@coroutine_fn
def qcow2_handle_l2meta(bs: Qcow2BDS, metas: list, link: bool) -> int:
    """Link (or, for a failed request, abort) each allocation, take it off
    the in-flight list and wake its waiters; a link that fails leaves it
    and the rest in ``metas``.  Context: coroutine, s->lock held.
    QEMU: qcow2_handle_l2meta."""
    s = bs.opaque
    while metas:
        m = metas[0]
        if link:
            ret = qcow2_alloc_cluster_link_l2(bs, m)
            if ret:
                return ret
        else:
            qcow2_alloc_cluster_abort(bs, m)
        del metas[0]
        if m in s.cluster_allocs:
            s.cluster_allocs.remove(m)
        qemu_co_queue_restart_all(m.dependent_requests)
    return 0
