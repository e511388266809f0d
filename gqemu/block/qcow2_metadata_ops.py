"""The qcow2 vtable slots that change or read only metadata: zero writes
(``qcow2_co_pwrite_zeroes``: whole subclusters, or a partial one whose rest
already reads as zero through the whole chain), discard, writing back the
L2 and refcount caches (``qcow2_co_flush_to_os``) and block status with the
metadata-preallocation check.  ``Qcow2MetadataOps`` holds them; the driver
class (``qcow2.BDRVQcow2State``: open, close, reads, writes, compressed
writes, info) derives from it and sits above this module.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2.c qcow2_co_pwrite_zeroes, qcow2_co_pdiscard,
qcow2_co_flush_to_os, qcow2_write_caches, qcow2_co_block_status;
block/qcow2-refcount.c qcow2_detect_metadata_preallocation.
"""
from __future__ import annotations

import os
from errno import ENOTSUP
from typing import Any

from gqemu.coroutine import coroutine_fn, qemu_co_mutex_lock, qemu_co_mutex_unlock
from gqemu.block.driver import BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO
from gqemu.block.driver import bdrv_getlength as bdrv_node_getlength
from gqemu.block.block_int import BDRV_BLOCK_RECURSE
import gqemu.block.qcow2_refcount as qcow2_refcount
from gqemu.block.qcow2_cache import qcow2_cache_write
from gqemu.block.qcow2_data_file import qcow2_data_child, qcow2_data_file_write_zeroes
from gqemu.block.qcow2_cluster import qcow2_get_host_offset, qcow2_wait_cluster_allocs
from gqemu.block.qcow2_zero import qcow2_cluster_discard, qcow2_subcluster_zeroize
from gqemu.block.qcow2_l2 import (
    QCOW2_SUBCLUSTER_COMPRESSED, QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
    QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, QCOW2_SUBCLUSTER_ZERO_ALLOC, QCOW2_SUBCLUSTER_ZERO_PLAIN)
from gqemu.block.qcow2_rw import qcow2_is_zero
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2State

# Cluster types a partial write-zeroes may turn into a zero cluster.
_ZEROABLE = (QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
             QCOW2_SUBCLUSTER_ZERO_PLAIN, QCOW2_SUBCLUSTER_ZERO_ALLOC)


class Qcow2MetadataOps(Qcow2State):
    """The vtable slots of bdrv_qcow2 that change or read only metadata
    (the driver class ``qcow2.BDRVQcow2State`` derives from this one)."""

    @coroutine_fn
    def qcow2_co_pwrite_zeroes(self, bs: Qcow2BDS, offset: int, nbytes: int, flags: int) -> int:
        """Zero (sub)clusters; a request inside one subcluster whose rest
        already reads as zero (through the whole chain) zeroes the whole
        subcluster if it is unallocated or zero; anything else, and v2 with
        a backing file, falls back to a normal write (-ENOTSUP).
        QEMU: qcow2_co_pwrite_zeroes."""
        s = self
        scs = s.subcluster_size
        end = offset + nbytes
        head = offset & (scs - 1)
        tail = -end & (scs - 1)
        if end == bs.total_sectors * 512:
            tail = 0
        if head or tail:
            assert head + nbytes + tail <= scs
            if not (qcow2_is_zero(bs, offset - head, head)
                    and qcow2_is_zero(bs, end, tail)):
                return -ENOTSUP
            qemu_co_mutex_lock(s.lock)
            offset -= head
            nbytes = scs
            # gqemu also waits for allocations in flight there (see
            # qcow2_wait_cluster_allocs) before looking at the cluster
            qcow2_wait_cluster_allocs(bs, offset, nbytes)
            ret, ctype, _n, _host = qcow2_get_host_offset(bs, offset, scs)
            if ret < 0 or ctype not in _ZEROABLE:
                qemu_co_mutex_unlock(s.lock)
                return ret if ret < 0 else -ENOTSUP
        else:
            qemu_co_mutex_lock(s.lock)
        qcow2_wait_cluster_allocs(bs, offset, nbytes)
        ret = qcow2_data_file_write_zeroes(bs, offset, nbytes, flags)
        if ret >= 0:
            ret = qcow2_subcluster_zeroize(bs, offset, nbytes, flags)
        qemu_co_mutex_unlock(s.lock)
        return ret

    bdrv_co_pwrite_zeroes = qcow2_co_pwrite_zeroes

    @coroutine_fn
    def qcow2_co_pdiscard(self, bs: Qcow2BDS, offset: int, nbytes: int) -> int:
        """Discard whole clusters (and the partial one at an unaligned
        image end); ignore partial clusters.  v2 with a backing file cannot
        make them read as zero, so it keeps them (-ENOTSUP).
        QEMU: qcow2_co_pdiscard."""
        s = self
        if s.qcow_version < 3 and bs.backing is not None:
            return -ENOTSUP
        cs = s.cluster_size
        if (offset | nbytes) & (cs - 1):
            if offset & (cs - 1) or offset + nbytes != bs.total_sectors * 512:
                return -ENOTSUP
        qemu_co_mutex_lock(s.lock)
        qcow2_wait_cluster_allocs(bs, offset, nbytes)
        ret = qcow2_cluster_discard(bs, offset, nbytes)
        qemu_co_mutex_unlock(s.lock)
        return ret

    bdrv_co_pdiscard = qcow2_co_pdiscard

    @coroutine_fn
    def qcow2_co_flush_to_os(self, bs: Qcow2BDS) -> int:
        """Write back the L2 cache, then the refcount cache (unless lazy).
        QEMU: qcow2_co_flush_to_os / qcow2_write_caches."""
        if self.disabled or self.read_only or not self.opened:
            return 0
        qemu_co_mutex_lock(self.lock)
        ret = qcow2_cache_write(bs, self.l2_table_cache)
        if ret >= 0 and not self.use_lazy_refcounts:
            ret = qcow2_cache_write(bs, self.refcount_block_cache)
        qemu_co_mutex_unlock(self.lock)
        return ret

    bdrv_co_flush_to_os = qcow2_co_flush_to_os

    @coroutine_fn
    def qcow2_co_get_block_status(self, bs: Qcow2BDS, offset: int,
                                  nbytes: int) -> tuple[int, int, int, Any]:
        """(BDRV_BLOCK_*, bytes, host offset, file node).
        QEMU: qcow2_co_block_status."""
        qemu_co_mutex_lock(self.lock)
        ret, t, cur, host = qcow2_get_host_offset(bs, offset, nbytes)
        prealloc = ret >= 0 and self._metadata_preallocation(bs)
        qemu_co_mutex_unlock(self.lock)
        if ret < 0:
            return ret, 0, 0, None
        status, f, mapped = 0, None, 0
        if t in (QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_ZERO_ALLOC,
                 QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC) and self.crypto is None:
            status |= BDRV_BLOCK_OFFSET_VALID
            mapped, f = host, qcow2_data_child(bs).bs
        if t in (QCOW2_SUBCLUSTER_ZERO_ALLOC, QCOW2_SUBCLUSTER_ZERO_PLAIN):
            status |= BDRV_BLOCK_ZERO
        elif t in (QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_COMPRESSED):
            status |= BDRV_BLOCK_DATA
        if status & BDRV_BLOCK_DATA and status & BDRV_BLOCK_OFFSET_VALID and prealloc:
            status |= BDRV_BLOCK_RECURSE    # the file knows which are holes
        return status, cur, mapped, f

    def _metadata_preallocation(self, bs: Qcow2BDS) -> bool:
        """Whether the image looks metadata-preallocated: clearly more
        clusters have a refcount than the file has allocated.  Checked once.
        Context: coroutine, s->lock held.
        QEMU: qcow2_detect_metadata_preallocation."""
        found = getattr(self, "metadata_preallocation", None)
        if found is not None:
            return bool(found)
        self.metadata_preallocation = False
        node: Any = bs.file.bs              # down to the file-posix node
        while node is not None and not hasattr(node.drv, "fd"):
            node = node.file.bs if node.file is not None else None
        if node is None:
            return False
        try:
            real_allocation = os.fstat(node.drv.fd).st_blocks * 512
        except OSError:
            return False
        file_length = bdrv_node_getlength(bs.file.bs)
        if file_length < 0:
            return False
        cs = self.cluster_size
        real_clusters = real_allocation // cs
        threshold = max(real_clusters * 10 // 9, real_clusters + 2)
        count = 0
        for i in range((file_length + cs - 1) // cs):
            ret, refcount = qcow2_refcount.qcow2_get_refcount(bs, i)
            if ret < 0:
                return False
            count += refcount != 0
            if count >= threshold:
                self.metadata_preallocation = True
                break
        return bool(self.metadata_preallocation)

    bdrv_co_get_block_status = qcow2_co_get_block_status
